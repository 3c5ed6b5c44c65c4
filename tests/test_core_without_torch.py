"""The core install (no torch) imports and runs on the scripted policy: torch is only for the trained model and
the kernels, and asking for the trained model without it is a clear error."""

import subprocess
import sys

CODE = """
import sys
sys.modules["torch"] = None  # any `import torch` now fails, as it would without the torch extra
sys.modules["triton"] = None
import microturn.messages, microturn.runtime, microturn.actors, microturn.audio, microturn.model, microturn.cli
from microturn.cli import main
sys.exit(main(["demo", "--ticks", "5", *sys.argv[1:]]))
"""


def test_core_imports_and_runs_without_torch():
    out = subprocess.run([sys.executable, "-c", CODE, "--model", "scripted"], check=False, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "SessionEnded" in out.stdout


def test_the_default_model_without_torch_says_what_to_install():
    out = subprocess.run([sys.executable, "-c", CODE], check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "--model embedded needs the 'torch' extra: pip install 'microturn[torch]'" in out.stderr
    assert "--model scripted" in out.stderr and "Traceback" not in out.stderr
