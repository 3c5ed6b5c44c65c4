"""The actors of the reference system. Each is an ordinary :class:`microturn.runtime.Actor`."""

from .clock import ClockActor

__all__ = ["ClockActor"]
