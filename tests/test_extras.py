"""A command whose optional extra is missing says which extra to install and exits 2, never a traceback.

The missing packages are simulated in a subprocess (``sys.modules[name] = None`` makes ``import name`` fail as
it does when the package is not installed), then the command runs as ``microturn`` would run it.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from microturn.extras import EXTRAS, MissingExtra, check, install_command, require
from microturn.runtime import MicroturnError

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}

WITHOUT = """
import sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None  # as if that package were not installed
from microturn.cli import main
sys.exit(main(sys.argv[2:]))
"""

SCENARIO = str(ROOT / "microturn" / "scenarios" / "library" / "image-mid-sentence.toml")
TORCH = "torch,triton"
NEEDS_TORCH = "needs the 'torch' extra: pip install 'microturn[torch]'"

CASES = [
    ("starlette", ["serve", "--port", "0", "--untrained", "tiny"],
     "microturn serve needs the 'serve' extra: pip install 'microturn[serve]'"),
    ("hypercorn", ["serve", "--port", "0"], "microturn serve needs the 'serve' extra: pip install 'microturn[serve]'"),
    (TORCH, ["serve", "--port", "0"], f"microturn serve {NEEDS_TORCH}"),
    (f"{TORCH},starlette", ["serve"],
     "microturn serve needs the 'torch' and 'serve' extras: pip install 'microturn[torch,serve]'"),
    (TORCH, ["demo", "--ticks", "5"], f"microturn demo --model embedded {NEEDS_TORCH} (or use --model scripted)"),
    (TORCH, ["chat"], f"microturn chat --model embedded {NEEDS_TORCH} (or use --model scripted)"),
    (TORCH, ["chat", "--model", "local:model.pt"], f"microturn chat --model local:model.pt {NEEDS_TORCH}"),
    (TORCH, ["run", "--model", "embedded", SCENARIO], "pip install 'microturn[torch]'"),
    (TORCH, ["run", SCENARIO], "pip install 'microturn[torch]'"),  # the scenario's own model: the shipped one
    (TORCH, ["train", "--corpus", "corpus", "--out", "model.pt"], f"microturn train {NEEDS_TORCH}"),
    (TORCH, ["train-flow", "--checkpoint", "a.pt", "--out", "b.pt"], f"microturn train-flow {NEEDS_TORCH}"),
    ("sglang", ["sglang-up", "some/model"], "pip install 'microturn[sglang]'"),
    ("openai", ["serve", "--realtime", "--port", "0"],
     "microturn serve --realtime needs the 'realtime' extra: pip install 'microturn[realtime]'"),
    ("starlette", ["web", "--port", "0"], "needs the 'serve' extra: pip install 'microturn[serve]'"),
    ("pocketsphinx", ["run", "--model", "scripted", "--recognizer", "pocketsphinx", SCENARIO],
     "microturn run --recognizer pocketsphinx needs the 'asr' extra: pip install 'microturn[asr]'"),
    ("pocketsphinx", ["demo", "--model", "scripted", "--recognizer", "pocketsphinx"],
     "microturn demo --recognizer pocketsphinx needs the 'asr' extra: pip install 'microturn[asr]'"),
    ("pocketsphinx", ["chat", "--model", "scripted", "--recognizer", "pocketsphinx"],
     "microturn chat --recognizer pocketsphinx needs the 'asr' extra: pip install 'microturn[asr]'"),
]

NEEDS_NO_EXTRA = {"metrics", "show", "replay", "corpus"}
"""README commands that run on the core install (replay and corpus use the scripted policy by default)."""


@pytest.mark.parametrize(("blocked", "argv", "message"), CASES, ids=[" ".join(c[1][:3]) + f" -{c[0]}" for c in CASES])
def test_a_missing_extra_is_named_with_its_pip_command(tmp_path, blocked, argv, message):
    out = subprocess.run([sys.executable, "-c", WITHOUT, blocked, *argv], capture_output=True, text=True,
                         env=ENV, cwd=tmp_path, timeout=120, stdin=subprocess.DEVNULL, check=False)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.startswith("error: ") and message in out.stderr, out.stderr


def test_every_readme_command_is_covered():
    readme = (ROOT / "README.md").read_text()
    commands = set(re.findall(r"^    microturn ([a-z][a-z-]*)", readme, re.MULTILINE))
    assert {"serve", "chat", "train-flow"} <= commands  # the command list was found
    covered = {argv[0] for _, argv, _ in CASES} | NEEDS_NO_EXTRA
    assert commands <= covered, f"README commands with no missing-extra case: {commands - covered}"


def test_check_names_each_missing_extra_once(monkeypatch):
    monkeypatch.setitem(sys.modules, "starlette", None)
    monkeypatch.setitem(sys.modules, "hypercorn", None)
    with pytest.raises(MissingExtra) as caught:
        check("microturn serve", {"starlette": "serve", "hypercorn": "serve", "json": "torch"})
    assert str(caught.value) == "microturn serve needs the 'serve' extra: pip install 'microturn[serve]'"
    assert caught.value.extras == ["serve"]
    assert isinstance(caught.value, MicroturnError) and isinstance(caught.value, ImportError)


def test_require_returns_the_module_or_says_what_to_install(monkeypatch):
    import json

    assert require("json", "torch", "anything") is json
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(MissingExtra, match=re.escape("decoding needs the 'images' extra: pip install "
                                                     "'microturn[images]' (or send RGB)")):
        require("PIL", "images", "decoding", hint="or send RGB")


def test_an_installed_package_that_fails_to_import_says_why(tmp_path, monkeypatch):
    (tmp_path / "brokenpkg_for_test.py").write_text("raise ImportError('libfoo.so: cannot open shared object')\n")
    (tmp_path / "halfpkg_for_test.py").write_text("import no_such_dependency_for_test\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingExtra, match="importing brokenpkg_for_test failed: libfoo.so"):
        require("brokenpkg_for_test", "vad", "the learned VAD")
    with pytest.raises(MissingExtra, match="No module named 'no_such_dependency_for_test'"):
        require("halfpkg_for_test", "vad", "the learned VAD")


def test_only_known_extras_are_named():
    with pytest.raises(ValueError, match="unknown extra"):
        check("x", {"json": "gpu"})
    assert install_command("torch", "serve") == "pip install 'microturn[torch,serve]'"
    pyproject = (ROOT / "pyproject.toml").read_text()
    for extra in EXTRAS:  # every extra we tell people to install exists
        assert re.search(rf"^{extra} = \[", pyproject, re.MULTILINE), extra
