"""``--recognizer pocketsphinx``: speech sent without its transcript gets its words from the recognizer, and the
recording of such a run replays bit-exact; without the ``asr`` extra the commands say which extra to install."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from microturn.audio import espeak_available
from microturn.cli import main
from microturn.messages import RecognizedWords, UserText
from microturn.runtime import read_recording

SCENARIO = """
name = "asr-line"
category = "asr"
duration = 5.0

[model]
name = "scripted"

[[timeline]]
kind = "say"
at = 0.4
mode = "speech"
transcript = false
text = "what is the weather like today"
"""


def _scenario(tmp_path: Path) -> Path:
    path = tmp_path / "asr-line.toml"
    path.write_text(SCENARIO, encoding="utf-8")
    return path


@pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")
def test_speech_without_transcript_is_recognized_and_replays_bit_exact(tmp_path: Path, capsys) -> None:
    pytest.importorskip("pocketsphinx")
    record = tmp_path / "asr.mtr"
    status = main(["run", str(_scenario(tmp_path)), "--model", "scripted", "--recognizer", "pocketsphinx",
                   "--record", str(record)])
    assert status == 0, capsys.readouterr()
    rec = read_recording(record)
    assert rec.header.params["recognizer"] == "pocketsphinx"
    finals = [m for m in rec.messages if isinstance(m, RecognizedWords) and m.final]
    assert finals and "weather" in [w.text for w in finals[0].words]
    texts = [m for m in rec.messages if isinstance(m, UserText)]
    # the only transcript is the recognizer's: the scenario sent none
    assert texts and all(m.stamp is not None and m.stamp.source == "recognizer" for m in texts)
    assert "weather" in texts[0].text
    capsys.readouterr()
    assert main(["replay", str(record)]) == 0
    assert "replay OK" in capsys.readouterr().out


def test_without_the_recognizer_the_recording_params_are_unchanged(tmp_path: Path) -> None:
    record = tmp_path / "plain.mtr"
    text = SCENARIO.replace('mode = "speech"\ntranscript = false\n', "")
    path = tmp_path / "plain.toml"
    path.write_text(text, encoding="utf-8")
    assert main(["run", str(path), "--model", "scripted", "--record", str(record)]) == 0
    rec = read_recording(record)
    assert "recognizer" not in rec.header.params
    assert "recognizer" not in rec.header.actors


@pytest.mark.parametrize("argv", [
    ["run", "SCENARIO", "--recognizer", "pocketsphinx"],
    ["demo", "--model", "scripted", "--recognizer", "pocketsphinx"],
    ["chat", "--model", "scripted", "--recognizer", "pocketsphinx"],
])
def test_without_the_asr_extra_the_commands_name_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys,
                                                    argv: list[str]) -> None:
    monkeypatch.setitem(sys.modules, "pocketsphinx", None)  # an import of it now fails as if not installed
    argv = [str(_scenario(tmp_path)) if a == "SCENARIO" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "'asr' extra" in err and "pip install 'microturn[asr]'" in err and "Traceback" not in err


def test_the_echo_demo_refuses_a_recognizer(capsys) -> None:
    assert main(["demo", "--pipeline", "echo", "--recognizer", "pocketsphinx"]) == 2
    assert "--pipeline live" in capsys.readouterr().err


def test_an_unknown_recognizer_is_refused_by_name(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run", "x.toml", "--recognizer", "whisper"])
    assert exc.value.code == 2
    assert "whisper" in capsys.readouterr().err


@pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")
def test_the_demo_with_a_recognizer_hears_only_the_recognizer(tmp_path: Path, capsys) -> None:
    pytest.importorskip("pocketsphinx")
    record = tmp_path / "demo.mtr"
    assert main(["demo", "--model", "scripted", "--recognizer", "pocketsphinx", "--ticks", "40",
                 "--record", str(record)]) == 0
    texts = [m for m in read_recording(record).messages if isinstance(m, UserText)]
    assert texts and {m.stamp.source for m in texts if m.stamp is not None} == {"recognizer"}
    capsys.readouterr()
    assert main(["replay", str(record)]) == 0
