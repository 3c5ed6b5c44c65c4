"""The assembly type-checks: the registry returns the model backend protocol (not ``Any``), and every built-in
backend satisfies it, as mypy sees it."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_mypy_accepts_the_assembly() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--ignore-missing-imports", "--follow-imports=silent", "--no-incremental",
         "microturn/assembly"],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success: no issues found" in done.stdout


def test_the_registry_is_typed() -> None:
    from typing import get_type_hints

    from microturn.assembly import BackendRegistry, make_backend
    from microturn.model.protocol import ModelBackend

    assert get_type_hints(make_backend)["return"] is ModelBackend
    assert get_type_hints(BackendRegistry.make)["return"] is ModelBackend
