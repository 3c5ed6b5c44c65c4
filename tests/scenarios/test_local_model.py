"""Scenarios run on a trained-model checkpoint (``--model local:PATH``) exactly as on the scripted policy."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from microturn.cli import main  # noqa: E402
from microturn.model.config import tiny  # noqa: E402
from microturn.model.local import LocalBackend, save_checkpoint  # noqa: E402
from microturn.assembly import make_backend  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(LocalBackend.random(tiny(), seed=0).model, path, {"note": "untrained, for tests"})
    return path


def test_local_model_by_name_and_checkpoint(checkpoint):
    backend = make_backend(f"local:{checkpoint}")
    assert isinstance(backend, LocalBackend)


def test_a_scenario_runs_on_the_local_model(checkpoint, tmp_path, capsys):
    scenario = tmp_path / "hello.toml"
    scenario.write_text('duration = 3.0\n[[timeline]]\nkind = "say"\nat = 0.4\ntext = "hello there"\n')
    code = main(["run", str(scenario), "--model", f"local:{checkpoint}", "--record", str(tmp_path / "r.mtrec")])
    assert code == 0  # no expectations: it ran to the end
    assert "model local" in capsys.readouterr().out
    assert main(["replay", str(tmp_path / "r.mtrec")]) == 0  # and replays bit for bit


def test_bad_local_model_specs_are_clear(tmp_path, capsys):
    scenario = tmp_path / "hello.toml"
    scenario.write_text('duration = 1.0\n')
    assert main(["run", str(scenario), "--model", "local"]) == 2
    assert "needs a checkpoint" in capsys.readouterr().err
    assert main(["run", str(scenario), "--model", f"local:{tmp_path / 'missing.pt'}"]) == 2
    assert "missing.pt" in capsys.readouterr().err
