"""Turn-taking metrics on hand-built timelines whose right answers are worked out by hand, then on a real
recording of ``microturn demo``.

Conventions of the timelines (as the real actors publish them): window k is [0.2k, 0.2(k+1)); its
``InputChunk`` and ``Playout`` are published at its end; an utterance's word takes two windows, its text on
the first."""

from __future__ import annotations

import json

import msgspec
import pytest

from microturn.audio import espeak_available
from microturn.messages import (
    BackgroundUpdate,
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
)
from microturn.scenarios.metrics import compute_metrics, figures, format_metrics, metrics_main

P = 0.2


class Timeline:
    """Builds a stamped message list: messages are added at session times, seqs follow time order (ties keep
    the order they were added in)."""

    def __init__(self, end: float) -> None:
        self.end = end
        self.items: list[tuple[float, int, str, object]] = []
        self.speech: set[int] = set()
        self.uid = 0
        self.add(0.0, SessionStarted(session_id="t", mode="lockstep", tick_period=P, actors=[]), "session")

    def add(self, t: float, message, source: str = "test") -> None:
        self.items.append((round(t, 6), len(self.items), source, message))

    def user(self, t0: float, t1: float) -> None:
        """The user speaks in every window of [t0, t1)."""
        self.speech |= set(range(round(t0 / P), round(t1 / P)))

    def mark(self, name: str, t: float) -> None:
        self.add(t, Mark(name=name), "scenario")

    def state(self, t: float, user: str, assistant: str = "silent", floor: str = "none") -> None:
        """A DialogState published at ``t`` (after that instant's input chunk)."""
        self.add(t + 1e-7, DialogState(floor=floor, user=user, assistant=assistant), "dialog_state")

    def say(
        self,
        t0: float,
        words: list[str],
        *,
        per_word: int = 2,
        cut_at: float | None = None,
        emitted: int | None = None,
    ) -> int:
        """An utterance from ``t0``: each word ``per_word`` windows; ``cut_at`` stops it (barge-in) before
        the window starting there; ``emitted`` words of it were output by the model (default all)."""
        self.uid += 1
        u, k0 = self.uid, round(t0 / P)
        self.add(t0, SpeechStarted(utterance_id=u, generation=u), "interaction")
        for i, word in enumerate(words[: emitted if emitted is not None else len(words)]):
            self.add(t0 + i * per_word * P, OutputChunk(tick=k0 + i * per_word, generation=u, text=word), "interaction")
        played = []
        for j in range(len(words) * per_word):
            k = k0 + j
            if cut_at is not None and k * P >= cut_at - 1e-9:
                break
            text = words[j // per_word] if j % per_word == 0 else ""
            if text:
                played.append(text)
            self.add((k + 1) * P, Playout(tick=k, utterance_id=u, text=text), "output_mixer")
        end = cut_at if cut_at is not None else (k0 + len(words) * per_word) * P
        self.add(end, Heard(utterance_id=u, text_heard=" ".join(played), truncated=cut_at is not None), "output_mixer")
        reason = "interrupted" if cut_at is not None else "completed"
        self.add(end, SpeechEnded(utterance_id=u, generation=u, reason=reason), "interaction")
        return u

    def messages(self) -> list:
        for k in range(round(self.end / P)):
            prob = 0.9 if k in self.speech else 0.01
            self.add((k + 1) * P - 1e-7, InputChunk(tick=k, n_frames=4, speech_prob=prob), "perception")
        out = []
        for seq, (t, _, source, m) in enumerate(sorted(self.items, key=lambda x: (x[0], x[1])), start=1):
            out.append(msgspec.structs.replace(m, stamp=Stamp(tick=int(t / P + 1e-6), seq=seq, source=source, time=t)))
        return out


def words(n: int) -> list[str]:
    return [f"w{i}" for i in range(n)]


def test_a_smooth_turn_is_taken_over_and_its_response_latency_is_first_word_minus_turn_end():
    tl = Timeline(6.0)
    tl.user(0.4, 1.4)
    tl.mark("user:turn_end", 1.4)
    tl.say(2.0, words(5))  # first word at 2.0: 0.6 s after the turn ended
    m = compute_metrics(tl.messages())
    assert m.event_source == "marks"
    assert m.takeover_turn == 1.0
    assert m.response_latency_s == pytest.approx(0.6)
    assert m.talk_over_ratio == 0.0 and m.assistant_windows == 10
    assert m.takeover_pause is None and m.stop_latency_s is None and m.tool_latency_s is None
    (event,) = m.events
    assert event.kind == "turn_end" and event.utterance_id == 1 and event.response_start == pytest.approx(2.0)


def test_no_reply_after_a_turn_end_is_no_takeover_and_no_latency():
    tl = Timeline(4.0)
    tl.user(0.4, 1.0)
    tl.mark("user:turn_end", 1.0)
    m = compute_metrics(tl.messages())
    assert m.takeover_turn == 0.0 and m.response_latency_s is None


def test_takeover_thresholds_at_least_one_second_or_more_than_three_words():
    # four pauses, each ended by the user resuming; what the assistant says in each decides
    tl = Timeline(22.0)
    tl.mark("user:pause", 1.0)
    tl.say(1.2, ["mm-hm"])  # 1 word, 0.4 s: not a takeover
    tl.mark("user:pause_end", 2.0)
    tl.mark("user:pause", 5.0)
    tl.say(5.2, ["so"], per_word=5)  # 1 word lasting exactly 1.0 s: a takeover
    tl.mark("user:pause_end", 7.0)
    tl.mark("user:pause", 10.0)
    tl.say(10.2, words(4), per_word=1)  # 4 words in 0.8 s: a takeover
    tl.mark("user:pause_end", 12.0)
    tl.mark("user:pause", 15.0)
    tl.say(15.2, words(3), per_word=1)  # 3 words in 0.6 s: not a takeover
    tl.mark("user:pause_end", 17.0)
    m = compute_metrics(tl.messages())
    assert [e.takeover for e in m.events if e.kind == "pause"] == [False, True, True, False]
    assert m.takeover_pause == 0.5
    assert [e.takeover for e in m.events if e.kind == "pause_end"] == [None] * 4


def test_a_takeover_window_ends_at_the_next_user_event():
    tl = Timeline(8.0)
    tl.mark("user:pause", 1.0)
    tl.mark("user:pause_end", 2.0)
    tl.say(2.4, words(5))  # after the user resumed: not a takeover of the pause
    tl.mark("user:turn_end", 5.0)
    m = compute_metrics(tl.messages())
    assert m.takeover_pause == 0.0
    pause = m.events[0]
    assert pause.until == pytest.approx(2.0) and pause.utterance_id is None
    # the utterance began before the turn ended: it is no response to it
    assert m.takeover_turn == 0.0


def test_backchannels_the_assistant_talks_through_are_not_takeovers_but_a_restart_is():
    tl = Timeline(12.0)
    tl.say(0.0, words(10))  # 0.0-4.0
    tl.user(1.0, 1.4)
    tl.mark("user:backchannel", 1.0)
    tl.say(4.4, words(3), cut_at=5.2)  # 4.4-5.2, cut at the second backchannel
    tl.user(5.0, 5.4)
    tl.mark("user:backchannel", 5.0)
    tl.say(5.6, words(5))  # and starts anew: a takeover
    m = compute_metrics(tl.messages())
    first, second = (e for e in m.events if e.kind == "backchannel")
    assert (first.takeover, first.interrupted_utterance, first.stopped) == (False, 1, False)
    assert (second.takeover, second.interrupted_utterance, second.stopped) == (True, 2, True)
    assert m.takeover_backchannel == 0.5
    # assistant windows: 20 + 4 + 10 = 34; both speak in windows 5, 6 and 25
    assert (m.assistant_windows, m.overlap_windows) == (34, 3)
    assert m.talk_over_ratio == pytest.approx(3 / 34, abs=1e-6)


def test_a_barge_in_stop_latency_takeover_and_heard_vs_said_loss():
    tl = Timeline(10.0)
    tl.user(0.2, 0.8)
    tl.mark("user:turn_end", 0.8)
    # ten words from 1.0; the model had emitted six when the user barged in at 2.0; playout stops after the
    # window [2.2, 2.4): four words heard (windows 5, 7, 9, 11)
    tl.say(1.0, words(10), cut_at=2.4, emitted=6)
    tl.user(2.0, 3.0)
    tl.mark("user:barge_in", 2.0)
    tl.mark("user:turn_end", 3.0)  # the end of the interrupting turn: still the barge-in's window
    tl.say(3.6, words(4))
    m = compute_metrics(tl.messages())
    barge = next(e for e in m.events if e.kind == "barge_in")
    assert barge.interrupted_utterance == 1 and barge.stopped is True
    assert barge.stop_latency == pytest.approx(0.4)  # kept talking 2.0 -> 2.4
    assert barge.takeover is True and barge.utterance_id == 2 and barge.until is None
    assert m.stop_latency_s == pytest.approx(0.4)
    assert m.takeover_interruption == 1.0
    # turn ends: 0.8 -> 1.0 and 3.0 -> 3.6
    assert m.takeover_turn == 1.0 and m.response_latency_s == pytest.approx((0.2 + 0.6) / 2)
    (loss,) = m.losses
    assert (loss.utterance_id, loss.said, loss.heard) == (1, 6, 4)
    assert m.heard_loss == pytest.approx(1 - 4 / 6, abs=1e-6)
    # assistant windows 5..11 and 18..25 (15); the user speaks in 10..14 as well: 10, 11 overlap
    assert (m.assistant_windows, m.overlap_windows) == (15, 2)


def test_a_barge_in_over_silence_has_no_stop_latency():
    tl = Timeline(4.0)
    tl.user(1.0, 2.0)
    tl.mark("user:barge_in", 1.0)
    m = compute_metrics(tl.messages())
    assert m.stop_latency_s is None and m.takeover_interruption == 0.0


def test_tool_latency_seen_by_the_user_runs_from_the_call_to_the_answer_being_spoken():
    tl = Timeline(10.0)
    tl.add(1.0, ToolCall(call_id="c1", name="lookup"), "interaction")
    tl.say(1.2, words(3))  # "let me check": begun before the result, not the answer
    tl.add(1.5, ToolResult(call_id="c1", ok=True, value=42, elapsed=0.5), "tool_runner")
    tl.say(3.0, words(4))  # the answer: 2.0 s after the call
    tl.add(5.0, ToolCall(call_id="c2", name="broken"), "interaction")
    tl.add(5.2, ToolResult(call_id="c2", ok=False, error="boom"), "tool_runner")
    tl.say(5.4, words(2))  # "sorry, that failed": 0.4 s after the call
    tl.add(8.0, ToolCall(call_id="c3", name="never"), "interaction")  # no result: not counted
    m = compute_metrics(tl.messages())
    by_id = {t.call_id: t for t in m.tools}
    assert (by_id["c1"].answer_utterance, by_id["c1"].latency, by_id["c1"].ok) == (2, pytest.approx(2.0), True)
    assert (by_id["c2"].answer_utterance, by_id["c2"].latency, by_id["c2"].ok) == (3, pytest.approx(0.4), False)
    assert by_id["c3"].latency is None and by_id["c3"].result is None
    assert m.tool_latency_s == pytest.approx(1.2)


def test_background_delivery_delay_finds_the_utterance_that_carries_the_result():
    tl = Timeline(16.0)
    tl.add(2.0, BackgroundUpdate(task_id="a", status="progress", text="looking"), "background")  # not final
    tl.add(2.0, BackgroundUpdate(task_id="a", status="final", text="The capital of France is Paris."), "background")
    tl.say(2.4, ["sure,", "one", "moment"])  # unrelated
    tl.say(4.0, ["the", "capital", "of", "France", "is", "Paris."])  # delivers it: 2.0 s after
    tl.add(7.0, BackgroundUpdate(task_id="b", status="final", text="secret", delivery="silent"), "background")
    tl.add(8.0, BackgroundUpdate(task_id="c", status="final", text="zebra quantum"), "background")
    tl.say(8.6, ["okay"])  # nothing matches: the next utterance, 0.6 s after
    tl.add(12.0, BackgroundUpdate(task_id="d", status="final", text="never said"), "background")
    m = compute_metrics(tl.messages())
    by_id = {b.task_id: b for b in m.background}
    assert set(by_id) == {"a", "c", "d"}  # silent delivery is not delivered on purpose
    assert (by_id["a"].utterance_id, by_id["a"].matched, by_id["a"].delay) == (2, True, pytest.approx(2.0))
    assert (by_id["c"].utterance_id, by_id["c"].matched, by_id["c"].delay) == (3, False, pytest.approx(0.6))
    assert by_id["d"].delay is None
    assert m.background_delivery_delay_s == pytest.approx(1.3)


def test_a_live_session_without_marks_gets_its_events_from_dialog_states():
    tl = Timeline(16.0)
    # a turn: speech 0.4-1.4, pausing then yielding; the reply starts at 2.2
    tl.user(0.4, 1.4)
    tl.state(0.8, "speaking", floor="user")
    tl.state(1.6, "pausing")
    tl.state(2.0, "yielding")
    tl.say(2.2, words(5))  # 2.2-4.2
    tl.state(2.2, "yielding", "speaking", "assistant")
    tl.state(4.2, "yielding")
    # a pause the user resumes from (4.8-5.6 silence), then the turn ends at 6.4
    tl.user(4.4, 4.8)
    tl.user(5.6, 6.4)
    tl.state(4.8, "speaking", floor="user")
    tl.state(5.0, "pausing")
    tl.state(6.0, "speaking", floor="user")
    tl.state(6.6, "pausing")
    tl.state(7.0, "inviting")
    tl.say(7.0, words(10), cut_at=8.6)  # 7.0-8.6, barged in on from 8.0
    tl.user(8.0, 9.0)
    tl.state(8.4, "speaking", "speaking", "assistant")
    tl.state(8.6, "interrupting", "silent", "user")
    tl.state(9.2, "pausing")
    tl.state(9.6, "yielding")
    tl.say(9.8, words(10))  # 9.8-13.8, with a backchannel at 11.0
    tl.user(11.0, 11.2)
    tl.state(11.4, "speaking", "speaking", "assistant")
    tl.state(11.6, "pausing", "speaking", "assistant")
    m = compute_metrics(tl.messages())
    assert m.event_source == "dialog_state"
    got = [(e.kind, round(e.time, 3)) for e in m.events]
    assert got == [
        ("turn_end", 1.4),
        ("pause", 4.8),
        ("pause_end", 5.6),
        ("turn_end", 6.4),
        ("barge_in", 8.0),
        ("turn_end", 9.0),
        ("backchannel", 11.0),
    ]
    # every turn end is answered: 1.4 -> 2.2, 6.4 -> 7.0 (cut later, but 1.6 s played), 9.0 -> 9.8
    turn_ends = [e for e in m.events if e.kind == "turn_end"]
    assert [e.utterance_id for e in turn_ends] == [1, 2, 3]
    assert [e.latency for e in turn_ends] == [pytest.approx(0.8), pytest.approx(0.6), pytest.approx(0.8)]
    assert m.takeover_turn == 1.0
    barge = next(e for e in m.events if e.kind == "barge_in")
    assert (barge.interrupted_utterance, barge.utterance_id, barge.until) == (2, 3, pytest.approx(11.0))
    assert m.takeover_pause == 0.0 and m.takeover_backchannel == 0.0 and m.takeover_interruption == 1.0
    assert m.stop_latency_s == pytest.approx(0.6)


def test_without_any_messages_every_figure_is_none():
    m = compute_metrics([])
    assert all(v is None for k, v in figures(m).items() if k.startswith(("takeover", "response", "stop")))
    assert m.talk_over_ratio is None and m.heard_loss is None
    assert "takeover rate on pauses" in format_metrics(m)


def test_metrics_main_rejects_a_file_that_is_not_a_recording(tmp_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    assert metrics_main(str(path)) == 2
    err = capsys.readouterr().err
    assert "not a microturn recording" in err
    assert metrics_main(str(tmp_path / "missing.mtrec")) == 2


@pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")
def test_metrics_of_a_real_demo_recording_are_plausible_and_deterministic(tmp_path, capsys):
    from microturn.cli import main

    results = []
    for i in range(2):
        path = tmp_path / f"demo{i}.mtrec"
        assert main(["demo", "--model", "scripted", "--record", str(path)]) == 0
        capsys.readouterr()
        assert metrics_main(str(path)) == 0
        out = capsys.readouterr().out
        results.append(json.loads(out.strip().splitlines()[-1]))
        assert "takeover rate on smooth turns" in out
    first, second = results
    assert first == second
    # four spoken turns, each answered; one barge-in, cut within a second; the tool answer and the
    # background result reach the user a little later
    assert first["events"] == "dialog_state"
    assert first["turns"] == 4 and first["interruptions"] == 1
    assert first["takeover_turn"] == 1.0 and first["takeover_interruption"] == 1.0
    assert 0.2 <= first["response_latency_s"] <= 1.5
    assert 0.0 < first["stop_latency_s"] <= 1.0
    assert 0.0 < first["talk_over_ratio"] < 0.2
    assert 0.0 < first["tool_latency_s"] < 5.0
    assert 0.0 < first["background_delivery_delay_s"] < 5.0
    assert 0.0 <= first["heard_loss"] < 1.0
    # a recording cut off mid-session still gives the metrics of its intact prefix, with a warning
    data = (tmp_path / "demo0.mtrec").read_bytes()
    (tmp_path / "cut.mtrec").write_bytes(data[: len(data) * 3 // 4])
    assert metrics_main(str(tmp_path / "cut.mtrec")) == 0
    out = capsys.readouterr().out
    assert out.startswith("warning:") and "cut off" in out
    assert json.loads(out.strip().splitlines()[-1])["turns"] >= 3
