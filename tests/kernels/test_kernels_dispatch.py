import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import subprocess
import sys

import pytest
import torch

from microturn.kernels import KernelBackendError, KernelInputError, rms_norm, select_backend, triton_available


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=120)


def test_cpu_tensors_pick_the_reference():
    assert select_backend(None, torch.zeros(1)) == "torch"
    assert select_backend("torch", torch.zeros(1)) == "torch"


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(KernelInputError, match="backend: expected 'triton', 'torch' or None, got 'cuda'"):
        rms_norm(torch.ones(2, 4), backend="cuda")


@pytest.mark.skipif(not triton_available(), reason="triton is not installed")
def test_forcing_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(KernelBackendError, match="TRITON_INTERPRET=1"):
        select_backend("triton", torch.zeros(1))


def test_package_import_does_not_import_triton():
    done = _run("import sys, microturn.kernels; assert 'triton' not in sys.modules, 'triton imported eagerly'")
    assert done.returncode == 0, done.stderr


def test_references_and_dispatch_work_without_triton():
    code = """
import sys
sys.modules['triton'] = None  # as if triton were not installed
import torch
import microturn.kernels as k
assert not k.triton_available()
x = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
assert torch.equal(k.rms_norm(x), k.rms_norm_reference(x))
try:
    k.rms_norm(x, backend='triton')
except k.KernelBackendError as exc:
    assert 'not installed' in str(exc)
else:
    raise AssertionError('forcing triton without triton must fail')
"""
    done = _run(code)
    assert done.returncode == 0, done.stderr
