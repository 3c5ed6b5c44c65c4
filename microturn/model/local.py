"""The local torch backend ("local"): runs :class:`InteractionModel` in-process through a :class:`KVSession`,
plus weights-only checkpoints with a JSON manifest that loading checks.

Checkpoint format: ``<name>.pt`` holds the ``state_dict`` (``torch.save``; loaded with ``weights_only=True``, so
loading never runs pickled code) and ``<name>.json`` the manifest: format version, the config, the weights'
sha256 and size, and whatever the caller adds (data seed, training time, metrics).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import msgspec
import torch

from .config import ModelConfig
from .kv_session import KVSession, SessionSnapshot
from .protocol import BlockingModelSession, ModelError, ModelSpec, StepInput, StepOutput
from .torch_model import InteractionModel

__all__ = ["CheckpointError", "LocalBackend", "LocalSession", "load_checkpoint", "save_checkpoint"]

FORMAT = "microturn-interaction-model/1"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or does not match its manifest or this code's model."""


def _manifest_path(path: Path) -> Path:
    return path.with_suffix(".json")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(model: InteractionModel, path: str | Path, manifest: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s weights to ``path`` (.pt) and its manifest beside it (.json); returns the weights path."""
    path = Path(path).with_suffix(".pt")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, path)
    extra = dict(manifest or {})
    for reserved in ("format", "config", "sha256", "bytes"):
        extra.pop(reserved, None)
    doc = {"format": FORMAT, "config": msgspec.to_builtins(model.cfg), "sha256": _sha256(path),
           "bytes": path.stat().st_size, **extra}
    _manifest_path(path).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return path


def load_checkpoint(path: str | Path, *, config: ModelConfig | None = None) -> tuple[InteractionModel, dict[str, Any]]:
    """Load and verify a checkpoint: (model in eval mode, manifest). ``config`` (optional) must match the
    manifest's. Raises :class:`CheckpointError` naming what is wrong."""
    path = Path(path).with_suffix(".pt")
    mpath = _manifest_path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: weights file not found")
    if not mpath.is_file():
        raise CheckpointError(f"checkpoint {path}: manifest {mpath.name} not found")
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint {path}: manifest {mpath.name} is not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise CheckpointError(f"checkpoint {path}: manifest format: expected {FORMAT!r}, got {got!r}")
    actual = _sha256(path)
    if actual != manifest.get("sha256"):
        raise CheckpointError(f"checkpoint {path}: sha256 mismatch (manifest {manifest.get('sha256')}, file {actual}):"
                              " the weights are corrupt or belong to another manifest")
    try:
        cfg = msgspec.convert(manifest["config"], ModelConfig)
    except (KeyError, msgspec.ValidationError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path}: manifest config is invalid ({exc})") from exc
    if config is not None and config != cfg:
        raise CheckpointError(f"checkpoint {path}: config mismatch: expected {config}, the manifest has {cfg}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a damaged zip/pickle
        raise CheckpointError(f"checkpoint {path}: cannot read the weights ({exc})") from exc
    model = InteractionModel(cfg)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path}: weights do not fit the config ({exc})") from exc
    return model.eval(), manifest


class LocalSession(BlockingModelSession):
    """One conversation on the local model: a :class:`KVSession` stepped on the calling thread."""

    def __init__(self, model: InteractionModel, spec: ModelSpec, *, audio: bool = False) -> None:
        self.kv = KVSession(model, temperature=spec.temperature, seed=spec.seed, audio=audio)
        self.closed = False

    def step_sync(self, step_input: StepInput) -> StepOutput:
        """Append one tick's input and decode its output (K = the model config's ``outputs_per_tick``)."""
        if self.closed:
            raise ModelError("step on a closed local session")
        return self.kv.step(step_input)

    def snapshot(self) -> SessionSnapshot:
        """The session's state, bit-exact (see :meth:`KVSession.snapshot`)."""
        return self.kv.snapshot()

    def restore(self, snap: SessionSnapshot) -> None:
        """Go back to a :meth:`snapshot`."""
        self.kv.restore(snap)

    def memory_bytes(self) -> int:
        """Bytes of KV cache this session holds."""
        return self.kv.memory_bytes()

    async def close(self) -> None:
        """Drop the cache."""
        self.closed = True


class LocalBackend:
    """The interaction model in-process (torch, CPU or CUDA).

    ``model`` is an :class:`InteractionModel` or a checkpoint path (verified by :func:`load_checkpoint`).
    :meth:`random` builds an UNTRAINED model (for tests and benchmarks: its outputs are noise). ``threads``
    sets torch's intra-op threads when a session opens (process-wide; None leaves it): decode is thousands
    of tiny ops, which one thread runs faster than two. ``spec.outputs_per_tick`` is not used: K is fixed by
    the model's config (the layout it was trained on). ``audio=True`` adds the flow head's frames to every
    step (``StepOutput.audio``: four dMel frames); the checkpoint's manifest must say its flow head was
    trained (``microturn train-flow``)."""

    name = "local"

    def __init__(self, model: InteractionModel | str | Path, device: str = "cpu", *, threads: int | None = 1,
                 audio: bool = False) -> None:
        if isinstance(model, (str, Path)):
            model, self.manifest = load_checkpoint(model)
        elif isinstance(model, InteractionModel):
            self.manifest = {}
        else:
            raise TypeError(f"LocalBackend(model=...): expected an InteractionModel or a checkpoint path, "
                            f"got {type(model).__name__}")
        if audio and self.manifest and not isinstance(self.manifest.get("flow"), dict):
            raise CheckpointError("audio: this checkpoint's flow head was never trained (its manifest has no "
                                  "'flow' entry); run microturn train-flow on it first")
        self.model = model.to(device).eval()
        self.threads = threads
        self.audio = audio

    @classmethod
    def random(cls, config: ModelConfig, seed: int = 0, device: str = "cpu", **kwargs: Any) -> LocalBackend:
        """A backend on a randomly initialised (untrained) model, reproducible from ``seed``."""
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            model = InteractionModel(config)
        finally:
            torch.random.set_rng_state(gen_state)
        backend = cls(model, device, **kwargs)
        backend.manifest = {"untrained": True, "seed": seed}
        return backend

    async def open_session(self, spec: ModelSpec) -> LocalSession:
        """Open a fresh session (greedy at ``spec.temperature == 0``, else sampled from ``spec.seed``)."""
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        return LocalSession(self.model, spec, audio=self.audio)
