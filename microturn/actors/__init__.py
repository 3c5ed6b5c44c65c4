"""The actors of the reference system. Each is an ordinary :class:`microturn.runtime.Actor`."""

from .clock import ClockActor
from .dialog_state import DialogStateActor, DialogStateMachine, DialogTimings
from .interaction import InteractionActor, coalesce_chunks
from .output_mixer import OutputMixer
from .perception import PerceptionActor

__all__ = [
    "ClockActor",
    "DialogStateActor",
    "DialogStateMachine",
    "DialogTimings",
    "InteractionActor",
    "OutputMixer",
    "PerceptionActor",
    "coalesce_chunks",
]
