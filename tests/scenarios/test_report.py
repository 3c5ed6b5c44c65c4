"""The HTML report: self-contained, every lane drawn, expectations visible, and rendered by a real headless
Chromium (Debian's ``chromium``; skipped only when it is not installed — CI installs it)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import msgspec
import pytest

from microturn.messages import (
    BackgroundUpdate,
    Delegate,
    DialogState,
    Heard,
    InputChunk,
    Mark,
    OutputChunk,
    Playout,
    SessionStarted,
    SpeechEnded,
    SpeechStarted,
    Stamp,
    ToolCall,
    ToolResult,
    UserAudio,
    UserText,
)
from microturn.runtime import Recording, RecordingHeader
from microturn.scenarios import ExpectationOutcome
from microturn.scenarios.report import LANES, render_report, write_report

P = 0.2
NASTY = "</script><script>alert(1)</script>"


def session() -> Recording:
    """Six seconds: the user asks, the assistant calls a tool (which fails) and delegates, answers, and is
    barged in on; scenario marks at the user events."""
    items: list[tuple[float, str, object]] = [
        (0.0, "session", SessionStarted(session_id="t", mode="lockstep", tick_period=P, actors=["a"]))
    ]

    def at(t, source, message):
        items.append((round(t, 6), source, message))

    speech = set(range(2, 7)) | set(range(20, 25))
    for k in range(30):
        at((k + 1) * P - 1e-7, "perception", InputChunk(tick=k, n_frames=4, speech_prob=0.9 if k in speech else 0.0))
    at(0.4, "scenario", UserAudio(pcm=b"\0" * 6400))
    at(1.2, "scenario", UserText(text=f"what is the weather {NASTY}"))
    at(1.4, "scenario", Mark(name="user:turn_end"))
    at(1.5, "scenario", Mark(name="mark:custom"))
    for t, user, assistant, floor in [
        (0.0, "yielding", "silent", "none"),
        (0.8, "speaking", "silent", "user"),
        (1.6, "inviting", "silent", "none"),
        (1.8, "inviting", "speaking", "assistant"),
        (4.2, "interrupting", "silent", "user"),
        (5.2, "yielding", "silent", "none"),
    ]:
        at(t + 1e-7, "dialog_state", DialogState(floor=floor, user=user, assistant=assistant))
    at(1.8, "interaction", SpeechStarted(utterance_id=1, generation=1))
    at(1.8, "interaction", ToolCall(call_id="weather-1", name="weather", args={"city": "Paris"}))
    at(1.9, "tool_runner", ToolResult(call_id="weather-1", ok=False, error="no network"))
    at(2.0, "interaction", Delegate(task_id="task-1", goal="find the weather"))
    at(2.4, "background", BackgroundUpdate(task_id="task-1", status="started"))
    at(3.4, "background", BackgroundUpdate(task_id="task-1", status="final", text="Sunny in Paris."))
    words = "let me check the weather for you".split()
    for i, w in enumerate(words):
        at(1.8 + 2 * i * P, "interaction", OutputChunk(tick=9 + 2 * i, generation=1, text=w))
    for k in range(9, 22):  # cut at 4.4 by the barge-in at 4.0
        at((k + 1) * P, "output_mixer", Playout(tick=k, utterance_id=1, text=words[(k - 9) // 2] if k % 2 else ""))
    at(4.0, "scenario", Mark(name="user:barge_in"))
    at(4.4, "output_mixer", Heard(utterance_id=1, text_heard="let me check the weather for", truncated=True))
    at(4.4, "interaction", SpeechEnded(utterance_id=1, generation=1, reason="interrupted"))
    messages = [
        msgspec.structs.replace(m, stamp=Stamp(tick=int(t / P + 1e-6), seq=seq, source=source, time=t))
        for seq, (t, source, m) in enumerate(sorted(items, key=lambda x: x[0]), start=1)
    ]
    header = RecordingHeader(session_id="t", mode="lockstep", tick_period=P, actors=["a"])
    return Recording(path="t.mtrec", header=header, messages=messages)


OUTCOMES = [
    ExpectationOutcome(name="answers within 1 s", ok=True, time=1.8, observed="first word 0.4 s after the turn"),
    ExpectationOutcome(name="stops within 200 ms", ok=False, time=4.0, observed="kept talking for 400 ms"),
]


@pytest.fixture(scope="module")
def page() -> str:
    return render_report(session(), OUTCOMES, title="weather check")


def test_the_report_is_self_contained(page):
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"\b(src|href|xlink:href)\s*=", page)
    assert "@import" not in page and "url(" not in page
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page and "<script>" in page


def test_every_lane_is_drawn_with_its_elements(page):
    for lane, _, _ in LANES:
        assert f'id="lane-{lane}"' in page
    assert 'class="speech user"' in page and 'class="said user"' in page
    assert 'class="speech assistant truncated"' in page and ">weather</text>" in page
    assert 'class="state user-state interrupting"' in page
    assert 'class="tool failed"' in page and "no network" in page
    assert 'class="task"' in page and 'class="update final"' in page
    assert 'class="mark user-event"' in page and 'class="mark custom"' in page


def test_expectations_are_marked_and_a_failure_is_visible_at_a_glance(page):
    assert '<div id="banner" class="banner fail">1 expectation failed</div>' in page
    assert page.count('class="expectation failed"') == 1 and page.count('class="expectation ok"') == 1
    assert 'class="failure-line"' in page
    assert "kept talking for 400 ms" in page  # the observed text, shown on hover
    items = re.findall(r'class="expectation-item (ok|failed)"', page)
    assert items == ["failed", "ok"]  # failures first
    passing = render_report(session(), OUTCOMES[:1])
    assert "the expectation held" in passing and 'class="expectation failed"' not in passing
    assert "no expectations were judged" in render_report(session())


def test_messages_are_embedded_as_json_with_bytes_summarized(page):
    raw = re.search(r'<script type="application/json" id="mt-messages">(.*?)</script>', page, re.DOTALL).group(1)
    rows = json.loads(raw)
    assert len(rows) == len(session().messages)
    audio = next(r for r in rows if r[4] == "UserAudio")
    assert audio[5]["pcm"] == "<6400 bytes>"
    text = next(r for r in rows if r[4] == "UserText")
    assert text[5]["text"].endswith(NASTY)  # intact once decoded ...
    assert NASTY not in page  # ... and never able to close a script element


def test_the_metrics_table_is_in_the_report(page):
    assert 'id="metrics"' in page
    assert "takeover rate on smooth turns" in page and "stop latency (s)" in page
    assert '<tr data-key="stop_latency_s"><td>stop latency (s)</td><td class="num">0.400</td>' in page


def test_write_report_writes_the_file(tmp_path):
    path = write_report(tmp_path / "r.html", session(), OUTCOMES)
    assert Path(path).read_text(encoding="utf-8") == render_report(session(), OUTCOMES)


# --- a real browser -------------------------------------------------------------------------------------------

_BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    for name in _BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no chromium installed (CI installs Debian's chromium)")


def run_browser(browser, tmp_path, *args, name="profile"):
    profile = tmp_path / name
    profile.mkdir()
    return subprocess.run(
        [browser, *_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, timeout=90, check=True
    )


@pytest.fixture(scope="module")
def report_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "report.html"
    write_report(path, session(), OUTCOMES, title="weather check")
    return path


def test_chromium_runs_the_page_and_the_lanes_and_the_failure_are_in_the_dom(browser, report_file, tmp_path):
    dom = run_browser(browser, tmp_path, "--dump-dom", report_file.as_uri()).stdout.decode()
    assert 'data-ready="1"' in dom  # the script ran to the end
    for lane, _, _ in LANES:
        assert re.search(rf'<g id="lane-{lane}" class="lane">', dom)
    assert re.search(r'<g class="expectation failed"[^>]*data-tip="✗ FAILED: stops within 200 ms', dom)
    assert '<div id="banner" class="banner fail">1 expectation failed</div>' in dom
    # the script opened the details panel on the failure's window (4.0 s = window 20), built from the JSON
    assert "window 20: [4.000, 4.200) s" in dom
    rows = re.findall(r'<tr class="msg (\w+)">', dom)
    assert "Mark" in rows and "InputChunk" in rows


def test_an_address_with_a_time_selects_that_window(browser, report_file, tmp_path):
    dom = run_browser(browser, tmp_path, "--dump-dom", report_file.as_uri() + "#t=1.85").stdout.decode()
    assert "window 9: [1.800, 2.000) s" in dom
    rows = re.findall(r'<tr class="msg (\w+)">', dom)
    assert {"SpeechStarted", "ToolCall", "ToolResult"} <= set(rows)


def test_chromium_screenshot_shows_the_page(browser, report_file, tmp_path):
    shot = tmp_path / "report.png"
    run_browser(browser, tmp_path, "--window-size=1280,900", f"--screenshot={shot}", report_file.as_uri())
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000
    from PIL import Image

    with Image.open(shot) as image:
        rgb = image.convert("RGB")
        assert rgb.size == (1280, 900)
        colors = rgb.getcolors(maxcolors=1 << 20)
        assert len(colors) > 50  # text, lanes and marks: far from a blank page
        banner_red = sum(n for n, c in colors if c == (0xC6, 0x28, 0x28))
        assert banner_red > 5_000  # the red "1 expectation failed" banner is on screen


def test_tool_progress_notes_are_drawn_on_the_tool_lane():
    import microturn.messages as catalogue

    progress_type = getattr(catalogue, "ToolProgress", None)
    if progress_type is None:
        pytest.skip("this catalogue has no ToolProgress")
    rec = session()
    stamp = Stamp(tick=9, seq=len(rec.messages) + 1, source="tool_runner", time=1.85)
    note = progress_type(call_id="weather-1", text="asking the sky", fraction=0.5, stamp=stamp)
    rec = Recording(path=rec.path, header=rec.header, messages=[*rec.messages, note])
    page = render_report(rec)
    assert 'class="tool-progress"' in page and "asking the sky" in page and "(50%)" in page
