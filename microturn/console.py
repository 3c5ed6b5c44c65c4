"""``microturn chat``: a full-duplex text session in the terminal, in realtime mode.

The assistant's words appear as they are "spoken" (one ``Playout`` per micro-turn); the bottom line shows the
dialog state and what you are typing. Typing while the assistant speaks interrupts it at the first keystroke
(a barge-in, like starting to talk over someone); Enter sends the line. Ctrl-D or ``/quit`` ends the session.

The terminal is put in cbreak mode (keys arrive one by one, no echo) so a single keystroke can interrupt;
anything that is not a terminal (a pipe) is read line by line instead.
"""

from __future__ import annotations

import codecs
import os
import sys
import termios
import tty
from collections.abc import Callable
from typing import TextIO

import trio

from microturn.messages import DialogState, Interrupt, Playout, SpeechEnded, SpeechStarted, UserText
from microturn.runtime import Actor

__all__ = ["Screen", "ConsoleActor", "run_chat"]

_CLEAR_LINE = "\r\x1b[2K"


class Screen:
    """The terminal: transcript lines scroll above, one status-and-prompt line stays at the bottom."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.status = "floor: none · you: pausing · assistant: silent"
        self.typed = ""
        self.speaking_line: str | None = None

    def _prompt(self) -> str:
        return f"[{self.status}] > {self.typed}"

    def redraw(self) -> None:
        """Rewrite the bottom line."""
        self.out.write(_CLEAR_LINE + self._prompt())
        self.out.flush()

    def line(self, text: str) -> None:
        """Print a finished transcript line above the prompt."""
        self.out.write(_CLEAR_LINE + text + "\n")
        self.redraw()

    def assistant_words(self, text: str) -> None:
        """Extend the assistant's line in progress (rewritten in place above the prompt)."""
        if self.speaking_line is None:
            self.speaking_line = "assistant: " + text
            self.out.write(_CLEAR_LINE + self.speaking_line + "\n")
        else:
            self.speaking_line += " " + text
            self.out.write(_CLEAR_LINE + "\x1b[1A" + _CLEAR_LINE + self.speaking_line + "\n")
        self.redraw()

    def end_assistant_line(self, suffix: str = "") -> None:
        """Close the assistant's line (marking it when it was cut off)."""
        if self.speaking_line is not None and suffix:
            self.speaking_line += suffix
            self.out.write(_CLEAR_LINE + "\x1b[1A" + _CLEAR_LINE + self.speaking_line + "\n")
            self.redraw()
        self.speaking_line = None


class ConsoleActor(Actor):
    """Shows what the assistant says and the dialog state; turns keystrokes into text and barge-ins."""

    subscriptions = (Playout, DialogState, SpeechStarted, SpeechEnded)

    def __init__(self, screen: Screen, *, name: str = "console") -> None:
        super().__init__(name)
        self.screen = screen
        self.generation = 0
        self.speaking = False

    async def handle(self, message: object) -> None:
        """Render the session's output."""
        match message:
            case SpeechStarted(generation=generation):
                self.generation, self.speaking = generation, True
            case Playout(text=text) if text:
                self.screen.assistant_words(text)
            case SpeechEnded(reason=reason):
                self.speaking = False
                self.screen.end_assistant_line(" —" if reason == "interrupted" else "")
            case DialogState(floor=floor, user=user, assistant=assistant):
                self.screen.status = f"floor: {floor} · you: {user} · assistant: {assistant}"
                self.screen.redraw()

    async def key(self, char: str) -> bool:
        """One keystroke from the user; returns False when the user asked to quit."""
        screen = self.screen
        if char in ("\x04",):  # Ctrl-D
            return False
        if char in ("\r", "\n"):
            text, screen.typed = screen.typed.strip(), ""
            if text == "/quit":
                return False
            if text:
                screen.line(f"you: {text}")
                await self.session.publish(UserText(text=text), source="console")
            screen.redraw()
            return True
        if char in ("\x7f", "\b"):
            screen.typed = screen.typed[:-1]
        elif char.isprintable():
            if not screen.typed and self.speaking:
                await self.session.publish(Interrupt(generation=self.generation, reason="typing"), source="console")
            screen.typed += char
        screen.redraw()
        return True


async def run_chat(
    build: Callable[[Screen], list[Actor]],
    *,
    stdin: int = 0,
    out: TextIO = sys.stdout,
    tick_period: float = 0.2,
) -> None:
    """Run a realtime chat session until the user quits; ``build(screen)`` returns the session's actors,
    one of them a :class:`ConsoleActor` on that screen."""
    from microturn.runtime import open_session

    screen = Screen(out)
    actors = build(screen)
    console = next(a for a in actors if isinstance(a, ConsoleActor))
    is_tty = os.isatty(stdin)
    saved = termios.tcgetattr(stdin) if is_tty else None
    try:
        if is_tty:
            tty.setcbreak(stdin)
        out.write("microturn chat — type to talk; typing while the assistant speaks interrupts it; /quit ends.\n")
        async with open_session(actors, mode="realtime", tick_period=tick_period, session_id="chat"):
            screen.redraw()
            await _read_keys(trio.lowlevel.FdStream(os.dup(stdin)), console)
    finally:
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        out.write("\n")
        out.flush()


async def _read_keys(stream: trio.lowlevel.FdStream, console: ConsoleActor) -> None:
    """Feed keystrokes to the console until end of input or a quit."""
    # incremental: a multi-byte character may arrive split across two reads
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    async with stream:
        while data := await stream.receive_some(1024):
            for char in decoder.decode(data):
                if not await console.key(char):
                    return
