"""The README's example actor runs as written, and its first lines give the two commands."""

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_starts_with_the_two_commands():
    head = README.read_text().splitlines()[:12]
    assert any("microturn demo" in line for line in head)
    assert any("pytest" in line and "torch==2.13.0" in line for line in head)


def test_readme_example_actor_runs(tmp_path):
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    assert len(code.splitlines()) <= 30
    (tmp_path / "example.py").write_text(code)
    out = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    show = subprocess.run(
        [sys.executable, "-m", "microturn.cli", "show", "shout.mtrec", "--type", "OutputChunk"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "HELLO" in show.stdout
