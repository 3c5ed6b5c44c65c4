import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch

from microturn.kernels import KernelInputError, interpreter_problem, rms_norm, rms_norm_reference

requires_triton = pytest.mark.skipif(interpreter_problem() is not None, reason=str(interpreter_problem()))
# The reference always; Triton on the CPU through its interpreter (TRITON_INTERPRET=1).
BACKENDS = ["torch", pytest.param("triton", marks=requires_triton)]


TOL = {torch.float32: 1e-5, torch.float16: 2e-3}


def _naive(x: torch.Tensor, w: torch.Tensor | None, eps: float) -> torch.Tensor:
    xd = x.double()
    y = xd / torch.sqrt(xd.pow(2).mean(-1, keepdim=True) + eps)
    return y * w.double() if w is not None else y


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize(("rows", "d"), [(1, 1), (5, 37), (3, 1030)])
def test_matches_naive(backend, dtype, rows, d):
    g = torch.Generator().manual_seed(rows * 1000 + d)
    x = torch.randn(rows, d, generator=g).to(dtype)
    w = torch.randn(d, generator=g).to(dtype)
    got = rms_norm(x, w, 1e-5, backend=backend)
    assert got.dtype == dtype and got.shape == x.shape
    torch.testing.assert_close(got.double(), _naive(x, w, 1e-5), atol=TOL[dtype], rtol=TOL[dtype])


@requires_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_triton_matches_reference_without_weight_and_with_leading_dims(dtype):
    x = torch.randn(2, 3, 24, generator=torch.Generator().manual_seed(24)).to(dtype)
    torch.testing.assert_close(rms_norm(x, backend="triton"), rms_norm_reference(x), atol=TOL[dtype], rtol=TOL[dtype])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_batch_invariance_bitwise(backend, dtype):
    g = torch.Generator().manual_seed(1)
    d = 77
    w = torch.randn(d, generator=g).to(dtype)
    row = torch.randn(1, d, generator=g).to(dtype)
    alone = rms_norm(row, w, backend=backend)
    for others in range(2, 17):
        batch = torch.randn(others + 1, d, generator=g).to(dtype)
        at = others // 2
        batch[at] = row[0]
        assert torch.equal(rms_norm(batch, w, backend=backend)[at], alone[0]), f"differs inside {others} others"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((torch.ones(2, 4, dtype=torch.int32), None), "x: expected dtype in"),
        ((torch.ones(2, 4), torch.ones(5)), r"weight: expected shape \[D=4\], got \[5\]"),
        ((torch.ones(2, 4), torch.ones(4, dtype=torch.float64)), "weight: expected dtype in"),
        ((torch.ones(2, 0), None), "x: expected a non-empty last dimension"),
    ],
)
def test_bad_input(args, message):
    with pytest.raises(KernelInputError, match=message):
        rms_norm(*args)
