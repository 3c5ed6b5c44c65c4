"""The shipped checkpoint of the interaction model (trained by ``microturn train`` on this project's own corpus;
see its manifest ``embedded.json`` for the data seed, training time and held-out metrics). Torch-free."""

from pathlib import Path

__all__ = ["EMBEDDED_CHECKPOINT"]

EMBEDDED_CHECKPOINT = Path(__file__).resolve().parent / "embedded.pt"
"""The default model of ``microturn run``, ``chat`` and ``demo`` (weights; the manifest lies beside it)."""
