"""``microturn chat`` driven as a person drives it: in tmux, with keystrokes, reading the screen.

The session runs in realtime (it is a live console), so the test waits for what the screen shows — polling
tmux with a generous deadline — and never for a fixed time: how fast the machine is only changes how soon
each wait ends.
"""

import shutil
import subprocess
import sys
import threading
import time
import uuid

import pytest

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


class Tmux:
    """A tmux session running one command, with helpers to type and to wait for the screen."""

    def __init__(self, command: str) -> None:
        self.name = f"mt-{uuid.uuid4().hex[:8]}"
        subprocess.run(["tmux", "new-session", "-d", "-s", self.name, "-x", "140", "-y", "30", command], check=True)

    def screen(self) -> str:
        out = subprocess.run(["tmux", "capture-pane", "-p", "-t", self.name], capture_output=True, text=True)
        return out.stdout

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True)

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
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


@pytest.fixture
def chat():
    term = Tmux(f"{sys.executable} -m microturn.cli chat --model scripted")  # the oracle's exact phrasing
    yield term
    term.close()


def test_chat_speaks_shows_state_and_stops_when_you_type(chat):
    chat.wait_for(lambda s: "microturn chat" in s and "floor:" in s, "the banner and the status line")
    chat.keys("hello there", "Enter")
    chat.wait_for(lambda s: "you: hello there" in s, "the user's line")
    screen = chat.wait_for(lambda s: "What can I do for you?" in s, "the whole answer")
    assert "assistant: Hi there!" in screen
    # a long answer, interrupted by the first keystroke while it is being spoken
    chat.keys("what is the capital of france", "Enter")
    chat.wait_for(lambda s: "assistant: speaking" in s and "assistant: Let me" in s, "the assistant speaking")
    chat.keys("w")
    screen = chat.wait_for(lambda s: "—" in s, "the cut-off mark on the assistant's line")
    cut = next(line for line in screen.splitlines() if line.startswith("assistant: Let me"))
    assert cut.endswith("—")
    chat.keys("ait", "Enter")
    chat.wait_for(lambda s: "you: wait" in s, "the typed line after the barge-in")
    chat.keys("/quit", "Enter")
