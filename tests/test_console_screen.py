"""The chat console's screen and actor, without a real terminal: what the screen writes is played through a
small terminal emulator (a test double) and the resulting rows are checked; the chat pipeline runs in lockstep."""

import argparse
import io
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from microturn.cli import chat_actors
from microturn.console import ConsoleActor, Screen
from microturn.messages import Playout
from microturn.runtime import open_session


class FakeTerminal:
    """Test double of a terminal: an unbounded grid that understands what :class:`Screen` writes — text with
    xterm's deferred wrap at ``width``, CR, LF (as CR LF, like a tty's ONLCR), erase line (ESC[2K), cursor up
    (ESC[nA) and erase to the end of the screen (ESC[J)."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.rows: list[list[str]] = [[]]
        self.wrapped: set[int] = set()  # rows that continue on the next one
        self.row = self.col = 0

    def _down(self, *, wrap: bool) -> None:
        if wrap:
            self.wrapped.add(self.row)
        self.row, self.col = self.row + 1, 0
        while len(self.rows) <= self.row:
            self.rows.append([])

    def write(self, data: str) -> int:
        i = 0
        while i < len(data):
            char = data[i]
            if char == "\x1b":
                end = i + 2
                while not data[end].isalpha():
                    end += 1
                self._escape(data[i + 2 : end], data[end])
                i = end + 1
                continue
            if char == "\r":
                self.col = 0
            elif char == "\n":
                self._down(wrap=False)
            else:
                if self.col >= self.width:  # the pending wrap happens at the next printable character
                    self._down(wrap=True)
                line = self.rows[self.row]
                line.extend(" " * (self.col + 1 - len(line)))
                line[self.col] = char
                self.col += 1
            i += 1
        return len(data)

    def _escape(self, arg: str, final: str) -> None:
        if final == "K" and arg == "2":
            self.rows[self.row] = []
            self.wrapped.discard(self.row)
        elif final == "A":
            self.row = max(0, self.row - int(arg or 1))
        elif final == "J":
            self.rows[self.row] = self.rows[self.row][: self.col]
            del self.rows[self.row + 1 :]
            self.wrapped = {r for r in self.wrapped if r < self.row}
        else:
            raise AssertionError(f"the screen wrote an escape the test terminal does not know: ESC[{arg}{final}")

    def flush(self) -> None:
        pass

    def lines(self) -> list[str]:
        """The logical lines: rows joined where one wrapped into the next."""
        out: list[str] = []
        joined = ""
        for r, row in enumerate(self.rows):
            joined += "".join(row)
            if r not in self.wrapped:
                out.append(joined.rstrip())
                joined = ""
        return out


def _transcript(term: FakeTerminal) -> list[str]:
    return [line for line in term.lines() if line and not line.startswith("[")]


def test_fake_terminal_follows_wraps_and_rewrites():
    term = FakeTerminal(5)
    term.write("abcdefg\nxy")
    assert term.lines() == ["abcdefg", "xy"]
    term.write("\r\x1b[2A\x1b[Jnew\nend")
    assert term.lines() == ["new", "end"]


def test_a_line_sent_during_a_reply_shows_after_the_cut_reply_and_once():
    term = FakeTerminal(140)
    screen = Screen(term, size=(140, 30))
    screen.user_line("you: what is the capital of france")
    screen.assistant_words(1, "Let")
    screen.assistant_words(1, "me")
    screen.user_line("you: wait")  # sent as the barge-in's keystrokes arrive, before the cut is known
    assert screen.held == ["you: wait"]
    screen.end_assistant(1, cut=True)
    assert screen.assistant_words(1, "look") is False  # a late Playout of the ended utterance is dropped
    screen.assistant_words(2, "Got")
    screen.assistant_words(2, "it.")
    screen.end_assistant(2)
    assert _transcript(term) == ["you: what is the capital of france", "assistant: Let me —", "you: wait",
                                 "assistant: Got it."]
    assert term.lines()[-1].startswith("[floor:")


def test_held_lines_show_after_hold_ticks_and_the_reply_continues_below():
    term = FakeTerminal(80)
    screen = Screen(term, size=(80, 24), hold_ticks=2)
    screen.assistant_words(1, "one")
    screen.user_line("you: hi")
    screen.tick()
    assert screen.held == ["you: hi"]
    screen.tick()
    assert screen.held == []
    screen.assistant_words(1, "two")
    screen.end_assistant(1, cut=True)
    assert _transcript(term) == ["assistant: one", "you: hi", "assistant: … two —"]


def test_a_long_reply_wraps_and_grows_in_place():
    term = FakeTerminal(20)
    screen = Screen(term, size=(20, 10))
    words = [f"word{i}" for i in range(12)]
    for word in words:
        screen.assistant_words(7, word)
    screen.end_assistant(7)
    assert _transcript(term) == ["assistant: " + " ".join(words)]


def test_the_prompt_stays_one_row_however_much_is_typed():
    term = FakeTerminal(40)
    screen = Screen(term, size=(40, 10))
    screen.typed = "x" * 500
    screen.redraw()
    screen.assistant_words(1, "hello")
    assert len(term.rows) == 2 and term.lines()[-1].endswith("x")


@st.composite
def _sessions(draw):
    """A random run of screen events as the console sees them: utterances playing one after another (some
    cut), user lines sent at any moment, ticks, late Playouts of ended utterances."""
    events = []
    for utterance in range(1, draw(st.integers(1, 8)) + 1):
        for w in range(draw(st.integers(0, 6))):
            events.append(("words", utterance, f"u{utterance}w{w}"))
            for _ in range(draw(st.integers(0, 2))):
                events.append(draw(st.sampled_from([("user",), ("tick",)])))
        events.append(("end", utterance, draw(st.booleans())))
        if draw(st.booleans()):
            events.append(("words", utterance, f"late{utterance}"))  # after its end: must not show
        for _ in range(draw(st.integers(0, 2))):
            events.append(draw(st.sampled_from([("user",), ("tick",)])))
    return events, draw(st.integers(12, 60)), draw(st.integers(1, 4))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(_sessions())
def test_every_line_shows_once_in_order(case):
    events, width, hold = case
    term = FakeTerminal(width)
    screen = Screen(term, size=(width, 200), hold_ticks=hold)
    sent, said, cut = [], {}, set()
    for event in events:
        match event:
            case ("words", u, word):
                if screen.assistant_words(u, word):
                    said.setdefault(u, []).append(word)
            case ("end", u, was_cut):
                screen.end_assistant(u, cut=was_cut)
                if was_cut:
                    cut.add(u)
            case ("user",):
                sent.append(f"you: line{len(sent)}")
                screen.user_line(sent[-1])
            case ("tick",):
                screen.tick()
    screen.close()
    shown = _transcript(term)
    assert [line for line in shown if line.startswith("you:")] == sent  # each once, in order
    assert not any("late" in line for line in shown)
    lines: dict[int, list[str]] = {}  # each utterance's lines: a fresh "assistant:" line opens the next one
    order = iter(sorted(said))
    for line in shown:
        if line.startswith("assistant: …"):
            lines[u].append(line)
        elif line.startswith("assistant: "):
            u = next(order)
            lines[u] = [line]
    assert sorted(lines) == sorted(said)
    for u, words in said.items():  # each utterance's words once, in order, across its continuation lines
        text = " ".join(p.removeprefix("assistant: ").removeprefix("…").removesuffix(" —") for p in lines[u])
        assert text.split() == words
        assert lines[u][-1].endswith(" —") == (u in cut)
    assert term.lines()[-1] == ""  # the prompt line is cleared at the end


def test_screen_refuses_a_bad_hold():
    with pytest.raises(ValueError, match="hold_ticks"):
        Screen(io.StringIO(), hold_ticks=0)


async def _chat(autojump_clock, steps, tools=()):
    """Run the chat pipeline of ``microturn chat`` (scripted policy, ``--tools`` modules) in lockstep; ``steps``
    are (session time, keys) typed into the console."""
    term = FakeTerminal(140)
    screen = Screen(term, size=(140, 60))
    args = argparse.Namespace(model="scripted", tools=list(tools), actor=[], tick_ms=200.0)
    actors = chat_actors(screen, args)
    console = next(a for a in actors if isinstance(a, ConsoleActor))
    played = []
    async with open_session(actors, mode="lockstep", taps=[played.append]) as session:
        for at, keys in steps:
            await session.run_for(at - session.clock.now())
            for key in keys:
                assert await console.key(key)
        await session.run_for(8.0)
    screen.close()
    return _transcript(term), [m for m in played if isinstance(m, Playout) and m.text]


async def test_chat_uses_a_plugin_tool(autojump_clock):
    weather = Path(__file__).resolve().parents[1] / "examples" / "weather.py"
    shown, _ = await _chat(autojump_clock, [(0.1, "what is the weather in Paris?\r")], tools=[str(weather)])
    assert shown[0] == "you: what is the weather in Paris?"
    assert "assistant: The weather in Paris is sunny, 21 degrees." in shown


async def test_chat_answers_the_first_line_and_speaks_the_tool_result(autojump_clock):
    shown, _ = await _chat(autojump_clock, [(0.1, "hello there\r"), (5.0, "what time is it?\r")])
    assert shown[:2] == ["you: hello there", "assistant: Hi there! What can I do for you?"]
    assert shown[2:4] == ["you: what time is it?", "assistant: Let me check the time."]
    assert shown[4].startswith("assistant: It is ") and shown[4].endswith(" seconds into our conversation.")
    seconds = float(shown[4].split()[3])
    assert 5.0 <= seconds <= 7.0  # the tool ran on the session clock, when it was asked


async def test_chat_barge_in_typed_in_one_go(autojump_clock):
    # the whole line arrives between two ticks, as a fast typist or a paste sends it
    shown, played = await _chat(autojump_clock, [(0.1, "what is the capital of france\r"), (1.5, "wait\r")])
    assert shown[0] == "you: what is the capital of france"
    assert shown[1].startswith("assistant: Let") and shown[1].endswith(" —")
    assert shown[2] == "you: wait"
    assert sum(line.startswith("assistant: Let") for line in shown) == 1
    heard_first = " ".join(m.text for m in played if m.utterance_id == 1)
    assert shown[1] == f"assistant: {heard_first} —"  # exactly what played, once
