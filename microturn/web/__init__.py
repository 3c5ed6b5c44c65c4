"""``microturn web``: a voice/text session in the browser, one session per tab, over a typed WebSocket.

The page (``static/``, package data, no CDN) sends 20 ms PCM16 frames at 16 kHz and typed lines; the server
sends the assistant's audio and words, the dialog state, tool calls and a ``stop`` at a barge-in. Every socket
frame is one msgspec-typed JSON object of a tagged union (:mod:`microturn.web.wire`) with a ``v`` version; a
bad frame is answered with an ``error`` frame naming the field and the value, and the session goes on.
"""

from microturn.web.app import WebLimits, WebServer, open_web, web_main

__all__ = ["WebLimits", "WebServer", "open_web", "web_main"]
