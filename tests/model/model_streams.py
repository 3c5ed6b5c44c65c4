"""Shared helpers for the model tests: deterministic synthetic step inputs."""

from __future__ import annotations

import numpy as np

from microturn.messages import BackgroundUpdate, DialogState, InputChunk, ToolResult
from microturn.model.protocol import StepInput

USER_STATES = ("speaking", "pausing", "yielding", "thinking")


def step_inputs(n: int, seed: int = 0, *, images: bool = True) -> list[StepInput]:
    """n ticks of random dMel, some text, an image, a background update and a tool result."""
    rng = np.random.default_rng(seed)
    out = []
    for t in range(n):
        text = "hello there" if t % 7 == 1 else ("é?" if t % 11 == 3 else "")
        patches, n_patches, grids = b"", 0, []
        if images and t == 4:
            patches = rng.integers(0, 256, 2 * 40 * 40 * 3, dtype=np.uint8).tobytes()
            n_patches, grids = 2, [(1, 2)]
        chunk = InputChunk(tick=t, dmel=rng.integers(0, 16, 4 * 80, dtype=np.uint8).tobytes(), n_frames=4,
                           text=text, patches=patches, n_patches=n_patches, image_grids=grids,
                           speech_prob=float(rng.random()))
        dialog = DialogState(floor="user", user=USER_STATES[t % 4], assistant="silent") if t else None
        background = [BackgroundUpdate(task_id="t1", status="final", text="done")] if t == 6 else []
        tools = [ToolResult(call_id="c1", ok=True, value={"x": 1})] if t == 9 else []
        out.append(StepInput(chunk=chunk, dialog=dialog, background=background, tool_results=tools,
                             speaking=bool(t % 3 == 0)))
    return out


def one_thread():
    """Run torch on one thread for a test module (restored after): the exact path issues thousands of tiny ops,
    and on a busy 2-core machine two OpenMP threads mostly wait for each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
