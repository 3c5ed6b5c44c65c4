"""``microturn chat``: a full-duplex text session in the terminal, in realtime mode.

The assistant's words appear as they are "spoken" (one ``Playout`` per micro-turn); the bottom line shows the
dialog state and what you are typing. Typing while the assistant speaks interrupts it at the first keystroke
(a barge-in, like starting to talk over someone); Enter sends the line. Ctrl-D or ``/quit`` ends the session
(exit status 0); Ctrl-C ends it the same clean way with exit status 130 (128 + SIGINT, as a shell reports an
interrupted command), SIGTERM with 143 and SIGHUP with 129. The terminal mode is restored on every way out.

The transcript is append-only, with one exception: the assistant's line in progress grows in place while it is
the last line. A line you send while an assistant line is still open is held back (it was sent at once; only
its display waits) until that line closes — at the cut, a tick or two after the barge-in — so every line is
shown once, whole, in the order the turns began. Should the assistant's line stay open longer than
``hold_ticks``, the held lines are shown anyway and the assistant's further words continue on a new
``assistant: …`` line.

The terminal is put in cbreak mode (keys arrive one by one, no echo) so a single keystroke can interrupt;
anything that is not a terminal (a pipe) is read line by line instead.
"""

from __future__ import annotations

import codecs
import math
import os
import signal
import sys
import termios
import tty
import unicodedata
from collections.abc import Callable
from typing import TextIO

import trio

from microturn.messages import DialogState, Interrupt, Playout, SpeechEnded, SpeechStarted, Tick, UserText
from microturn.runtime import Actor

__all__ = ["EXIT_STATUS", "ConsoleActor", "Screen", "run_chat"]

_CLEAR_LINE = "\r\x1b[2K"
_CLEAR_TO_END = "\x1b[J"
_CONTINUED = "assistant: … "
_CUT_MARK = " —"
_MAX_CLOSED = 256  # utterance ids remembered as ended (late Playouts of them are dropped); ids only grow

EXIT_STATUS = {"quit": 0, "eof": 0, signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}
"""The exit status of ``microturn chat`` by how it ended: ``/quit`` or Ctrl-D, or a signal (128 + its number)."""


def _char_cells(char: str) -> int:
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def _cells(text: str) -> int:
    """Terminal cells ``text`` takes (wide East Asian characters take two, combining marks none)."""
    if text.isascii():
        return len(text)
    return sum(_char_cells(char) for char in text)


def _fit(text: str, cells: int, *, keep: str) -> str:
    """``text`` cut to at most ``cells`` cells with an ellipsis where it was cut; ``keep`` is the end kept
    ("start" or "end")."""
    if _cells(text) <= cells:
        return text
    chars = text if keep == "start" else reversed(text)
    kept: list[str] = []
    used = 1  # the ellipsis
    for char in chars:
        used += _char_cells(char)
        if used > cells:
            break
        kept.append(char)
    body = "".join(kept) if keep == "start" else "".join(reversed(kept))
    return body + "…" if keep == "start" else "…" + body


class Screen:
    """The terminal: transcript lines scroll above, one status-and-prompt line stays at the bottom.

    ``size`` fixes (columns, rows) — tests; by default it is asked of the terminal on each redraw (a resized
    window is followed), falling back to 80 x 24 for anything that is not a terminal."""

    def __init__(self, out: TextIO, *, size: tuple[int, int] | None = None, hold_ticks: int = 3) -> None:
        if hold_ticks < 1:
            raise ValueError(f"Screen(hold_ticks=...) must be >= 1, got {hold_ticks!r}")
        self.out = out
        self.size = size
        self.hold_ticks = hold_ticks
        self.status = "floor: none · you: pausing · assistant: silent"
        self.typed = ""
        self.open_utterance: int | None = None
        """The utterance whose line is open (more of its words may come)."""
        self._line = ""  # the open utterance's text on its current terminal line
        self._live = False  # that line is the last transcript line, so it may be rewritten in place
        self._closed: dict[int, None] = {}  # ended utterances, oldest first
        self.held: list[str] = []
        """Lines sent while an assistant line was open, shown when it closes."""
        self._held_age = 0

    # --- terminal geometry ----------------------------------------------------------------------------------

    def _size(self) -> tuple[int, int]:
        if self.size is not None:
            return self.size
        try:
            size = os.get_terminal_size(self.out.fileno())
        except (AttributeError, ValueError, OSError):  # not a terminal (a pipe, a StringIO)
            return 80, 24
        return max(size.columns, 20), max(size.lines, 4)

    def _rows(self, text: str) -> int:
        return max(1, math.ceil(_cells(text) / self._size()[0]))

    def _prompt(self) -> str:
        """The bottom line, cut to one terminal row (the rewrite arithmetic counts on it being one): the status
        gives way first, down to half the row, then the start of what is typed (its end stays in view)."""
        width = self._size()[0] - 1
        head = f"[{self.status}] > "
        if _cells(head) > width // 2:
            head = f"[{_fit(self.status, max(width // 2 - 4, 1), keep='start')}] > "
        return head + _fit(self.typed, max(width - _cells(head), 1), keep="end")

    # --- drawing --------------------------------------------------------------------------------------------

    def redraw(self) -> None:
        """Rewrite the bottom line."""
        self.out.write(_CLEAR_LINE + self._prompt())
        self.out.flush()

    def _commit(self, text: str) -> None:
        """Print a transcript line above the prompt (it becomes the last line)."""
        self.out.write(_CLEAR_LINE + text + "\n")
        self._live = False
        self.redraw()

    def _set_open_line(self, text: str) -> None:
        """Show ``text`` as the open utterance's line: rewritten in place when it is still the last line."""
        if self._live and self._rows(self._line) < self._size()[1] - 1:
            up = self._rows(self._line)
            self.out.write(f"\r\x1b[{up}A{_CLEAR_TO_END}{text}\n")
            self.redraw()
        else:
            self._commit(text)
        self._line, self._live = text, True

    def line(self, text: str) -> None:
        """Print a finished transcript line above the prompt at once (an open assistant line continues below
        it on a new line)."""
        self._commit(text)

    def user_line(self, text: str) -> None:
        """Show a line the user sent: at once, or held while an assistant line is open."""
        if self.open_utterance is not None:
            self.held.append(text)
        else:
            self._commit(text)

    def _show_held(self) -> None:
        held, self.held, self._held_age = self.held, [], 0
        for text in held:
            self._commit(text)

    def tick(self) -> None:
        """A micro-turn passed: held lines that waited ``hold_ticks`` are shown anyway."""
        if self.held:
            self._held_age += 1
            if self._held_age >= self.hold_ticks:
                self._show_held()

    def assistant_words(self, utterance_id: int, text: str) -> bool:
        """The words utterance ``utterance_id`` played in this window; False when they were dropped (the
        utterance had already ended on screen)."""
        if utterance_id in self._closed:
            return False
        if self.open_utterance is not None and self.open_utterance != utterance_id:
            # utterances play one after another: the next one playing means the last one finished
            self.end_assistant(self.open_utterance, cut=False)
        if self.open_utterance is None:
            self.open_utterance = utterance_id
            self._live = False
            self._set_open_line("assistant: " + text)
        elif self._live:
            self._set_open_line(self._line + " " + text)
        else:
            self._set_open_line(_CONTINUED + text)
        return True

    def end_assistant(self, utterance_id: int, *, cut: bool = False) -> None:
        """Utterance ``utterance_id`` ended (marked ``—`` when it was cut off); held lines follow it."""
        self._closed[utterance_id] = None
        if len(self._closed) > _MAX_CLOSED:
            del self._closed[next(iter(self._closed))]
        if self.open_utterance != utterance_id:
            return  # it never played a word, or its line is already closed
        if cut:
            self._set_open_line((self._line if self._live else _CONTINUED.rstrip()) + _CUT_MARK)
        self.open_utterance, self._live = None, False
        self._show_held()

    def close(self) -> None:
        """The session is over: show anything held and clear the prompt line."""
        if self.open_utterance is not None:
            self.end_assistant(self.open_utterance)
        self._show_held()
        self.out.write(_CLEAR_LINE)
        self.out.flush()


class ConsoleActor(Actor):
    """Shows what the assistant says and the dialog state; turns keystrokes into text and barge-ins."""

    subscriptions = (Playout, DialogState, SpeechStarted, SpeechEnded, Tick)

    def __init__(self, screen: Screen, *, name: str = "console") -> None:
        super().__init__(name)
        self.screen = screen
        self.open: dict[int, int] = {}
        """Utterances started and not ended: id -> generation."""
        self.interrupted = -1
        """The newest generation this console has interrupted (one Interrupt per generation)."""

    @property
    def speaking(self) -> bool:
        """An utterance of the assistant has started and not ended."""
        return bool(self.open)

    async def handle(self, message: object) -> None:
        """Render the session's output."""
        match message:
            case SpeechStarted(utterance_id=utterance_id, generation=generation):
                self.open[utterance_id] = generation
                if len(self.open) > _MAX_CLOSED:  # ends that never came (a restarted actor): keep it bounded
                    del self.open[min(self.open)]
            case Playout(utterance_id=utterance_id, text=text) if text:
                if not self.screen.assistant_words(utterance_id, text):
                    self.log.debug("late_playout_dropped", utterance_id=utterance_id)
            case SpeechEnded(utterance_id=utterance_id, reason=reason):
                self.open.pop(utterance_id, None)
                self.screen.end_assistant(utterance_id, cut=reason == "interrupted")
            case DialogState(floor=floor, user=user, assistant=assistant):
                self.screen.status = f"floor: {floor} · you: {user} · assistant: {assistant}"
                self.screen.redraw()
            case Tick():
                self.screen.tick()

    async def _barge_in(self) -> None:
        """Talking over the assistant: interrupt what it is saying, once per generation."""
        if not self.open:
            return
        generation = max(self.open.values())
        if generation > self.interrupted:
            self.interrupted = generation
            await self.session.publish(Interrupt(generation=generation, reason="typing"), source=self.name)

    async def key(self, char: str) -> bool:
        """One keystroke from the user; returns False when the user asked to quit."""
        screen = self.screen
        if char == "\x04":  # Ctrl-D
            return False
        if char in ("\r", "\n"):
            text, screen.typed = screen.typed.strip(), ""
            if text == "/quit":
                return False
            if text:
                await self._barge_in()  # a line sent over the assistant is a barge-in even if typed before it
                screen.user_line(f"you: {text}")
                await self.session.publish(UserText(text=text), source=self.name)
            screen.redraw()
            return True
        if char in ("\x7f", "\b"):
            screen.typed = screen.typed[:-1]
        elif char.isprintable():
            await self._barge_in()
            if len(screen.typed) < 4096:  # a bounded line: the rest of an endless paste is dropped
                screen.typed += char
        screen.redraw()
        return True


async def run_chat(
    build: Callable[[Screen], list[Actor]],
    *,
    stdin: int = 0,
    out: TextIO = sys.stdout,
    tick_period: float = 0.2,
) -> int:
    """Run a realtime chat session until the user quits or a signal ends it; returns the exit status
    (:data:`EXIT_STATUS`). ``build(screen)`` returns the session's actors, one of them a :class:`ConsoleActor`
    on that screen."""
    from microturn.runtime import open_session

    screen = Screen(out)
    actors = build(screen)
    console = next(a for a in actors if isinstance(a, ConsoleActor))
    is_tty = os.isatty(stdin)
    saved = termios.tcgetattr(stdin) if is_tty else None
    ended: list[object] = []
    try:
        # A signal ends the session through the same clean path as /quit (actors stopped, terminal restored)
        # instead of a KeyboardInterrupt raised wherever the session happens to be; one that comes while the
        # session starts waits in the receiver until the session runs.
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            if is_tty:
                tty.setcbreak(stdin, termios.TCSANOW)  # TCSANOW: keep what was typed ahead (TCSAFLUSH drops it)
            out.write("microturn chat — type to talk; typing while the assistant speaks interrupts it; "
                      "/quit ends.\n")
            async with open_session(actors, mode="realtime", tick_period=tick_period, session_id="chat"):
                screen.redraw()
                # the session's own failures surface from open_session, outside this nursery
                async with trio.open_nursery() as nursery:

                    async def on_signal() -> None:
                        async for signum in signals:
                            ended.append(signum)
                            nursery.cancel_scope.cancel()
                            return

                    nursery.start_soon(on_signal)
                    ended.append(await _read_keys(trio.lowlevel.FdStream(os.dup(stdin)), console))
                    nursery.cancel_scope.cancel()
    finally:
        screen.close()
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        out.flush()
    return EXIT_STATUS.get(ended[0], 0) if ended else 0


async def _read_keys(stream: trio.lowlevel.FdStream, console: ConsoleActor) -> str:
    """Feed keystrokes to the console until end of input ("eof") or a quit ("quit")."""
    # incremental: a multi-byte character may arrive split across two reads
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    async with stream:
        while data := await stream.receive_some(1024):
            for char in decoder.decode(data):
                if not await console.key(char):
                    return "quit"
    return "eof"
