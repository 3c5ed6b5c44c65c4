"""The OpenAI Realtime WebSocket protocol, spoken by microturn (issue 20).

:mod:`microturn.realtime.protocol` turns client frames into the ``openai`` package's own event types (never
hand-written schemas) and builds server events the same way; it needs the ``realtime`` extra.
"""
