"""The actors of the reference system. Each is an ordinary :class:`microturn.runtime.Actor`."""

from .background import BackgroundActor, DeliveryPolicy
from .clock import ClockActor
from .dialog_state import DialogStateActor, DialogStateMachine, DialogTimings
from .interaction import InteractionActor, coalesce_chunks
from .output_mixer import OutputMixer
from .perception import PerceptionActor
from .reasoners import OfflinePlanner, OpenAIChatReasoner, default_reasoner
from .tool_runner import ToolExecutor, ToolRunner

__all__ = [
    "BackgroundActor",
    "ClockActor",
    "DeliveryPolicy",
    "DialogStateActor",
    "DialogStateMachine",
    "DialogTimings",
    "InteractionActor",
    "OfflinePlanner",
    "OpenAIChatReasoner",
    "OutputMixer",
    "PerceptionActor",
    "ToolExecutor",
    "ToolRunner",
    "coalesce_chunks",
    "default_reasoner",
]
