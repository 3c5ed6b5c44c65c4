import contextlib
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch
from test_kernels_invariance import position_free_dot

from microturn.kernels import KernelInputError, blocked_mm, interpreter_problem, matmul, matmul_reference

requires_triton = pytest.mark.skipif(interpreter_problem() is not None, reason=str(interpreter_problem()))
# The reference always; Triton on the CPU through its interpreter (TRITON_INTERPRET=1).
BACKENDS = ["torch", pytest.param("triton", marks=requires_triton)]


TOL = {torch.float32: 1e-4, torch.float16: 1e-2}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize(("m", "k", "n"), [(1, 8, 5), (17, 40, 70), (33, 3, 1)])
def test_matches_float64(backend, dtype, m, k, n):
    g = torch.Generator().manual_seed(m + k + n)
    a = torch.randn(m, k, generator=g).to(dtype)
    b = torch.randn(k, n, generator=g).to(dtype)
    got = matmul(a, b, backend=backend)
    assert got.dtype == dtype and got.shape == (m, n)
    torch.testing.assert_close(got.double(), a.double() @ b.double(), atol=TOL[dtype] * k**0.5, rtol=TOL[dtype])


@requires_triton
def test_triton_handles_transposed_weights_and_leading_dims():
    g = torch.Generator().manual_seed(20)
    a = torch.randn(2, 3, 20, generator=g)
    w = torch.randn(12, 20, generator=g)  # a Linear weight [out, in]
    torch.testing.assert_close(matmul(a, w.t(), backend="triton"), matmul_reference(a, w.t()), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_batch_invariance_bitwise(backend, dtype):
    # Under the interpreter tl.dot is OpenBLAS, whose bits depend on an element's place in the tile; the
    # Triton case runs with a dot that treats every place alike, as a GPU's does (test_kernels_invariance.py).
    g = torch.Generator().manual_seed(2)
    k, n = 96, 40
    w = torch.randn(n, k, generator=g).to(dtype)  # used transposed, as a Linear layer would
    row = torch.randn(1, k, generator=g).to(dtype)
    with position_free_dot() if backend == "triton" else contextlib.nullcontext():
        alone = matmul(row, w.t(), backend=backend)
        for others in range(2, 17):
            batch = torch.randn(others + 1, k, generator=g).to(dtype)
            at = (others * 5) % (others + 1)
            batch[at] = row[0]
            got = matmul(batch, w.t(), backend=backend)[at]
            assert torch.equal(got, alone[0]), f"differs inside {others} others"


def test_blocked_mm_row_bits_do_not_depend_on_the_batch():
    # Documents why the reference works on fixed 16-row blocks: one row alone takes torch's GEMV path.
    g = torch.Generator().manual_seed(3)
    a = torch.randn(24, 256, generator=g)
    b = torch.randn(256, 64, generator=g)
    assert torch.equal(blocked_mm(a[:1], b)[0], blocked_mm(a, b)[0])
    assert torch.equal(blocked_mm(a[5:6], b)[0], blocked_mm(a, b)[5])


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        (torch.ones(2, 3), torch.ones(4, 5), r"b: expected shape \[K=3, N\], got \[4, 5\]"),
        (torch.ones(2, 3), torch.ones(3, 5, dtype=torch.float16), "b: expected dtype torch.float32"),
        (torch.ones(2, 3, dtype=torch.int64), torch.ones(3, 5), "a: expected dtype in"),
        (torch.ones(2, 3), torch.ones(3), r"b: expected a 2-d tensor of shape \[K=3, N\]"),
    ],
)
def test_bad_input(a, b, message):
    with pytest.raises(KernelInputError, match=message):
        matmul(a, b)
