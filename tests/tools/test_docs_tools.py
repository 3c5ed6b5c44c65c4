"""The two tool examples of the docs (a decorated function tool, a whole tool actor) run as written, each
under 30 lines, and print what the page says they print. They live in docs/tools.md (or, once merged, in the
README): the test finds them by what they contain."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def example(marker: str) -> str:
    """The first python block of docs/tools.md or README.md that contains ``marker``."""
    for page in (ROOT / "docs" / "tools.md", ROOT / "README.md"):
        if page.exists():
            for code in re.findall(r"```python\n(.*?)```", page.read_text(), re.DOTALL):
                if marker in code:
                    return code
    raise AssertionError(f"no python example containing {marker!r} in docs/tools.md or README.md")


def run(code: str, tmp_path: Path) -> str:
    (tmp_path / "example.py").write_text(code)
    command = [sys.executable, "example.py"]
    out = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_the_decorated_function_tool_runs(tmp_path) -> None:
    code = example("@tool(")
    assert len(code.splitlines()) < 30
    lines = run(code, tmp_path).splitlines()
    assert lines[0] == "brew-2 tool 'brew': argument 'cups' = 'lots' is invalid: expected `int`, got `str` (0.0 s)"
    assert lines[1] == "brew-1 2 cups ready (1.0 s)"
    assert lines[2] == "{'cups': {'type': 'integer'}, 'strong': {'type': 'boolean', 'default': False}}"


def test_the_whole_tool_actor_runs_beside_the_tool_runner(tmp_path) -> None:
    code = example("tool_names = ")
    assert len(code.splitlines()) < 30 and "class Counter(Actor)" in code
    out = run(code, tmp_path)
    assert out.startswith("[('count-1', 2), ('count-2', 4), ('fly-3', \"unknown tool 'fly'; registered: calculate,")
    assert " count, " in out
