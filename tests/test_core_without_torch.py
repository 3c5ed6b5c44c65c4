"""The core install (no torch) imports and runs: torch is only for the local model and the kernels."""

import subprocess
import sys

CODE = """
import sys
sys.modules["torch"] = None  # any `import torch` now fails, as it would without the torch extra
sys.modules["triton"] = None
import microturn.messages, microturn.runtime, microturn.actors, microturn.audio, microturn.model, microturn.cli
from microturn.cli import main
sys.exit(main(["demo", "--ticks", "5"]))
"""


def test_core_imports_and_runs_without_torch():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "SessionEnded" in out.stdout
