"""The interaction model: its protocol (torch-free) and backends. Importing this package needs no torch."""

from .protocol import (
    CONTROL_TOKENS,
    BlockingModelSession,
    ModelBackend,
    ModelError,
    ModelSession,
    ModelSpec,
    StepInput,
    StepOutput,
    ToolRequest,
)
from .scripted import ScriptedPolicy, ScriptedSession

__all__ = [
    "CONTROL_TOKENS",
    "BlockingModelSession",
    "ModelBackend",
    "ModelError",
    "ModelSession",
    "ModelSpec",
    "StepInput",
    "StepOutput",
    "ToolRequest",
    "ScriptedPolicy",
    "ScriptedSession",
]
