"""Backends of the background reasoner: what turns a delegated goal into an answer.

A backend implements :class:`Reasoner`: ``await solve(task, io) -> str`` where ``task`` is the ``Delegate``
message (goal and complete context package) and ``io`` (:class:`TaskIO`) lets it report progress and call the
tools offered to it. It returns the final answer, or raises :class:`ReasonerError` with a message fit to log.
The background actor turns that into ``BackgroundUpdate`` s (started -> progress -> final | failed |
cancelled) and applies the delivery policy.

Two backends, each in its own module (re-exported here):

- :class:`OpenAIChatReasoner` — an OpenAI-compatible chat-completions client over httpx, streaming, with tool
  calling (works with an sglang or vLLM server, or any such endpoint). Configured by constructor or the
  environment (``MICROTURN_REASONER_URL`` / ``OPENAI_BASE_URL``, ``..._MODEL``, ``..._API_KEY``). The API key
  goes only into the ``Authorization`` header: it is never logged, never put in a message, and never shown
  by ``repr``; any error text that echoes it is redacted.
- :class:`OfflinePlanner` — the default when no endpoint is configured. Not a language model: a small,
  deterministic rule table that splits a request into clauses, maps each to a tool call from the registry
  (arithmetic -> ``calculate``, time questions -> ``session_time``, timers and reminders -> ``set_timer``,
  anything else -> ``search_knowledge`` over the local knowledge file) and phrases the results. When no rule
  gives an answer it fails ("I could not find that").

:func:`default_reasoner` picks the client when an endpoint is configured, the planner otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping

from .offline_planner import OfflinePlanner, PlanStep
from .openai_reasoner import OpenAIChatReasoner
from .reasoner_api import REASONER_ENV, Reasoner, ReasonerError, TaskIO

__all__ = [
    "REASONER_ENV",
    "OfflinePlanner",
    "OpenAIChatReasoner",
    "PlanStep",
    "Reasoner",
    "ReasonerError",
    "TaskIO",
    "default_reasoner",
]


def default_reasoner(env: Mapping[str, str] | None = None) -> Reasoner:
    """The OpenAI-compatible client when an endpoint is configured in the environment, else the offline
    planner."""
    client = OpenAIChatReasoner.from_env(env)
    return client if client is not None else OfflinePlanner()
