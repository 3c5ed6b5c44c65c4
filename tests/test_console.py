"""``microturn chat`` driven as a person drives it: in tmux, with keystrokes, reading the screen.

The session runs in realtime (it is a live console), so the test waits for what the screen shows — polling
tmux with a generous deadline — and never for a fixed time: how fast the machine is only changes how soon
each wait ends. Each test has its own tmux server (``-L``), so it never touches the user's tmux or another
test's, and runs chat from an interactive shell, so the shell prompt coming back is checked too.
"""

import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "shell-ready$ "
CHAT = f"{sys.executable} -m microturn.cli chat --model scripted"  # the oracle's exact phrasing
# the exit status, and whether the terminal's mode is what it was before chat put it in cbreak mode
RUN_CHAT = f'S0=$(stty -g); {CHAT}; echo "exit=$?"; [ "$(stty -g)" = "$S0" ] && echo tty-restored'


class Tmux:
    """A private tmux server running an interactive shell, with helpers to type and to wait for the screen."""

    def __init__(self) -> None:
        self.socket = f"mt-{uuid.uuid4().hex[:8]}"
        env = {**os.environ, "PS1": PROMPT, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        shell = ["bash", "--norc", "--noprofile", "-i"]
        self._tmux("new-session", "-d", "-s", "chat", "-x", "140", "-y", "50", *shell, env=env)
        try:
            self.wait_for(lambda s: PROMPT.rstrip() in s, "the shell prompt")
        except BaseException:
            self.close()  # the fixture never gets to its teardown
            raise

    def _tmux(self, *args: str, env: dict | None = None) -> str:
        out = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, env=env,
                             check=True, timeout=30)
        return out.stdout

    def screen(self) -> str:
        """The pane with its scrollback."""
        return self._tmux("capture-pane", "-p", "-S", "-500", "-t", "chat")

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "chat", *keys)

    def type(self, text: str) -> None:
        self._tmux("send-keys", "-t", "chat", "-l", text)  # literally: no key names

    def wait_for(self, predicate, what: str, deadline: float = 30.0) -> str:
        end = time.monotonic() + deadline
        poll = threading.Event()
        while time.monotonic() < end:
            screen = self.screen()
            if predicate(screen):
                return screen
            poll.wait(0.05)  # polling interval only: the test waits for the screen, not for a time
        raise AssertionError(f"the screen never showed {what}; it shows:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], check=False, capture_output=True, timeout=30)


def lines(screen: str) -> list[str]:
    return [line.rstrip() for line in screen.splitlines() if line.strip()]


@pytest.fixture
def term():
    term = Tmux()
    yield term
    term.close()


def start_chat(term: Tmux, extra: str = "") -> None:
    term.type(RUN_CHAT.replace(CHAT, f"{CHAT} {extra}") if extra else RUN_CHAT)
    term.keys("Enter")
    term.wait_for(lambda s: "microturn chat" in s and "[floor:" in s, "the banner and the status line")


def ended_cleanly(term: Tmux, status: int) -> str:
    """Wait for the shell prompt after chat; check the exit status, the terminal mode and no traceback."""

    def back(screen: str) -> bool:
        shown = lines(screen)
        return any(re.fullmatch(r"exit=\d+", line) for line in shown) and shown[-1] == PROMPT.rstrip()

    screen = term.wait_for(back, "the shell prompt back")
    shown = lines(screen)
    assert f"exit={status}" in shown  # whole lines: the typed command holds these words too
    assert "tty-restored" in shown
    assert "Traceback" not in screen
    return screen


def test_chat_speaks_shows_state_and_stops_when_you_type(term):
    start_chat(term)
    term.type("hello there")
    term.keys("Enter")
    # the first line is answered
    screen = term.wait_for(lambda s: "What can I do for you?" in s, "the whole answer to the first line")
    assert "you: hello there" in screen and "assistant: Hi there! What can I do for you?" in screen
    # a long answer, interrupted by the first keystroke while it is being spoken
    term.type("what is the capital of france")
    term.keys("Enter")
    term.wait_for(lambda s: "assistant: speaking" in s and "assistant: Let me" in s, "the assistant speaking")
    term.type("w")
    screen = term.wait_for(lambda s: "—" in s, "the cut-off mark on the assistant's line")
    cut = next(line for line in lines(screen) if line.startswith("assistant: Let me"))
    assert cut.endswith("—")
    term.type("ait")
    term.keys("Enter")
    term.wait_for(lambda s: "you: wait" in s, "the typed line after the barge-in")
    term.type("/quit")
    term.keys("Enter")
    ended_cleanly(term, 0)


def test_chat_runs_the_tool_and_speaks_its_answer(term):
    start_chat(term)
    term.type("what time is it?")
    term.keys("Enter")
    screen = term.wait_for(lambda s: "seconds into our conversation." in s, "the time, from the tool")
    shown = lines(screen)
    i = shown.index("you: what time is it?")
    assert shown[i + 1] == "assistant: Let me check the time."
    spoken = re.fullmatch(r"assistant: It is (\d+(?:\.\d+)?) seconds into our conversation\.", shown[i + 2])
    assert spoken is not None, shown[i + 2]
    assert float(spoken.group(1)) > 0  # the session time when the tool ran
    term.keys("C-d")
    ended_cleanly(term, 0)


def test_a_line_typed_during_a_reply_shows_once_after_the_cut_reply(term):
    start_chat(term)
    term.type("what is the capital of france")
    term.keys("Enter")
    question = "you: what is the capital of france"

    def reply_started(screen: str) -> bool:
        shown = lines(screen)
        return question in shown and shown[shown.index(question) + 1].startswith("assistant: Let me")

    term.wait_for(reply_started, "the reply being spoken")
    term.type("wait\r")  # the whole line in one go, faster than a tick: Enter arrives before the cut is seen
    screen = term.wait_for(lambda s: "you: wait" in s and "You said wait." in s, "the line and its answer")
    shown = lines(screen)
    transcript = [line for line in shown if line.startswith(("you: ", "assistant: "))]
    start = transcript.index(question)
    assert transcript[start + 1].startswith("assistant: Let me") and transcript[start + 1].endswith(" —")
    assert transcript[start + 2] == "you: wait"
    assert sum(line.startswith("assistant: Let me") for line in transcript) == 1  # the cut reply, once
    for line in transcript:
        if line.startswith("you: "):
            assert transcript.count(line) == 1, line
    term.type("/quit\r")
    ended_cleanly(term, 0)


def test_ctrl_c_ends_chat_cleanly_with_status_130(term):
    start_chat(term)
    term.type("what is the capital of france\r")
    term.wait_for(lambda s: "assistant: speaking" in s, "the assistant speaking")
    term.keys("C-c")  # in the middle of a reply
    ended_cleanly(term, 130)


def test_chat_calls_a_plugin_tool_from_a_file(term):
    start_chat(term, f"--tools {ROOT / 'examples' / 'weather.py'}")
    term.type("what is the weather in Oslo?\r")
    screen = term.wait_for(lambda s: "The weather in Oslo is snow, minus 3 degrees." in s, "the plugin tool's answer")
    shown = lines(screen)
    assert shown.index("you: what is the weather in Oslo?") < shown.index(
        "assistant: The weather in Oslo is snow, minus 3 degrees.")
    term.type("/quit\r")
    ended_cleanly(term, 0)
