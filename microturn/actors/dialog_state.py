"""The dialog-state actor: who holds the floor, and what the user and the assistant are doing.

A small state machine (:class:`DialogStateMachine`, no trio) advanced once per ``InputChunk`` (one tick) and
on the assistant's ``SpeechStarted`` / ``SpeechEnded``; the actor publishes ``DialogState`` whenever
(floor, user, assistant) changes, the first state included. Timings are in ticks (:class:`DialogTimings`).

**User activity.** A tick is active when ``speech_prob >= threshold`` or the chunk carries text (a text
console has no audio: typed text is speech for that tick). Audio-only activity counts as speech once it lasts
``onset`` ticks (a VAD can fire for one tick on a noise onset); text confirms it at once. Unconfirmed ticks
count as silence.

**User states.** ``yielding`` at the start (nobody holds the floor; the assistant may open). ``speaking``
while speech lasts. When it stops, the text of the current turn decides (only when the last stretch of
speech carried text; audio without a transcript has no cues):

- ends with a filled pause (um, uh, erm, hmm, ...) or a trailing conjunction (and, but, so, because, or; not
  after a full stop) -> ``thinking``: the turn is not over; ``yielding`` after ``end_of_turn_max`` of silence;
- ends with "?", or its last sentence opens with a wh-word or an auxiliary (and has no final "." or "!")
  -> ``inviting`` at once;
- ends a closed sentence ("." or "!") -> ``pausing``, then ``yielding`` after ``end_of_turn_closed`` of
  silence (a finished statement needs less confirmation than a trailing fragment);
- otherwise ``pausing``, then ``yielding`` after ``end_of_turn`` of silence; for audio without words the
  chunk's ``speech_final`` prosody decides: continuing -> ``end_of_turn_continuing``, final or not measured ->
  ``end_of_turn`` (a final-sounding dip between two words must not hand the turn over).

Silence is counted from the chunk's ``speech_end`` when one came (fractions of a tick): the clock starts at
the true end of speech, not at the end of the 200 ms window that held it.

``away`` after ``away`` ticks without speech from either side (silence while the assistant talks is listening).

**Overlap.** Speech the user starts while the assistant is speaking is tentative (user ``speaking``, floor
still the assistant's). If it lasts ``barge_in`` ticks (``backchannel_max`` while its transcript so far is only
backchannel words such as "yeah"), or its text exceeds ``backchannel_max_words`` words,
the user is ``interrupting`` (until that stretch of speech ends) and takes the floor. If it stops earlier,
while the assistant still speaks and within ``backchannel_max``, it was a backchannel: counted, the user is
``pausing`` (and stays so: a backchannel ends no turn) and the assistant keeps the floor. An interruption that stops within ``backchannel_max`` with no
text cue is a possible false interruption: the user stays ``pausing`` for ``false_interruption`` ticks (room
to go on) before ``yielding`` (the assistant may resume). Speech the assistant starts over the user's is the
assistant's doing: the user keeps the floor.

**Assistant.** ``speaking`` from ``SpeechStarted`` to ``SpeechEnded``; ``backchanneling`` when the
utterance's generation was flagged by an ``OutputChunk`` whose controls contain "backchannel" (before or
during the utterance). A backchannel never takes the floor.

**Floor.** ``user`` while interrupting, speaking (unless tentatively over the assistant) or thinking (unless
the assistant speaks anyway); ``assistant`` while it speaks; ``none`` otherwise.
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple

import msgspec

from microturn.messages import DialogState, InputChunk, Message, OutputChunk, SpeechEnded, SpeechStarted
from microturn.model.turn_cues import FILLERS, ends_thinking, ends_unfinished, is_backchannel
from microturn.runtime import Actor

__all__ = ["DEFAULT_SECONDS", "DialogSnapshot", "DialogStateActor", "DialogStateMachine", "DialogTimings", "text_cue"]

FILLED_PAUSES = FILLERS
QUESTION_OPENERS = frozenset(
    {"what", "when", "where", "who", "whom", "whose", "which", "why", "how", "is", "are", "was", "were", "am"}
    | {"do", "does", "did", "can", "could", "will", "would", "shall", "should", "may", "might", "must", "have"}
    | {"has", "had", "can't", "won't", "don't", "doesn't", "didn't", "isn't", "aren't", "wasn't", "weren't"}
    | {"couldn't", "wouldn't", "shouldn't"}
)
_WORD = re.compile(r"[a-z']+")


def _ticks(seconds: float, period: float = 0.2) -> int:
    """Whole ticks covering ``seconds`` (rounded up: a threshold is reached, never cut short)."""
    return max(1, math.ceil(seconds / period - 1e-9))


DEFAULT_SECONDS = {
    "onset": 0.4,
    "end_of_turn": 0.4,
    "end_of_turn_closed": 0.2,
    "end_of_turn_max": 3.0,
    "end_of_turn_continuing": 1.0,
    "barge_in": 0.5,
    "backchannel_max": 1.0,
    "false_interruption": 2.0,
    "away": 15.0,
}
"""The default timings in seconds (DialogTimings holds them in ticks)."""


class DialogTimings(msgspec.Struct, frozen=True, kw_only=True):
    """Dialog timings in ticks; the defaults are ``DEFAULT_SECONDS`` at 200 ms per tick, rounded up."""

    onset: int = _ticks(DEFAULT_SECONDS["onset"])
    """Consecutive active ticks before audio counts as speech (0.4 s -> 2)."""
    end_of_turn: int = _ticks(DEFAULT_SECONDS["end_of_turn"])
    """Silence after plain speech before the user is ``yielding`` (0.4 s -> 2)."""
    end_of_turn_closed: int = _ticks(DEFAULT_SECONDS["end_of_turn_closed"])
    """Silence after a closed sentence ("." or "!") before the user is ``yielding`` (0.2 s -> 1)."""
    end_of_turn_max: int = _ticks(DEFAULT_SECONDS["end_of_turn_max"])
    """The longest ``thinking`` pause before the user is ``yielding`` anyway (3 s -> 15)."""
    end_of_turn_continuing: int = _ticks(DEFAULT_SECONDS["end_of_turn_continuing"])
    """Silence after audio without words whose last stretch sounds unfinished (level or rising pitch) before
    the user is ``yielding`` (1 s -> 5); audio that sounds final waits ``end_of_turn`` like plain speech."""
    barge_in: int = _ticks(DEFAULT_SECONDS["barge_in"])
    """Overlapping speech that makes the user ``interrupting`` (0.5 s -> 3; backchannel words get
    ``backchannel_max``; audio without a transcript first needs ``onset`` to count as speech at all)."""
    backchannel_max: int = _ticks(DEFAULT_SECONDS["backchannel_max"])
    """Overlapping speech shorter than this that stops is a backchannel (1 s -> 5)."""
    false_interruption: int = _ticks(DEFAULT_SECONDS["false_interruption"])
    """After a short interruption, silence before the user is ``yielding`` (2 s -> 10)."""
    away: int = _ticks(DEFAULT_SECONDS["away"])
    """Silence on both sides before the user is ``away`` (15 s -> 75)."""

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DialogTimings.{name} must be an int >= 1 tick, got {value!r}")

    @classmethod
    def from_seconds(cls, period: float = 0.2, **seconds: float) -> DialogTimings:
        """Timings given in seconds (any of ``DEFAULT_SECONDS``' names), rounded up to ticks of ``period``."""
        unknown = set(seconds) - set(DEFAULT_SECONDS)
        if unknown:
            raise ValueError(f"unknown dialog timing(s) {sorted(unknown)}; known: {list(DEFAULT_SECONDS)}")
        return cls(**{name: _ticks(s, period) for name, s in {**DEFAULT_SECONDS, **seconds}.items()})


def text_cue(text: str) -> str:
    """What the end of ``text`` says about the turn: ``"thinking"``, ``"inviting"`` or ``"plain"``."""
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if _WORD.search(s.lower())]
    if not sentences:
        return "plain"
    last = sentences[-1].rstrip()
    words = _WORD.findall(last.lower())
    if last.endswith("?"):
        return "inviting"
    # A full stop closes the sentence; an ellipsis trails off, like no punctuation at all.
    closed = last.endswith((".", "!")) and not last.endswith(("...", "\u2026"))
    # Thinking aloud ("let me think") or a word no sentence ends on ("remind me to") leaves the turn open,
    # even when the words open a question; only a full stop closes it, and a filler outweighs even that.
    if words[-1] in FILLED_PAUSES or (not closed and (ends_thinking(words) or ends_unfinished(words))):
        return "thinking"
    if words[0] in QUESTION_OPENERS and not closed:
        return "inviting"
    return "plain"


def _closes(text: str) -> bool:
    """Whether ``text`` ends with a finished sentence ("." or "!", not an ellipsis)."""
    last = text.rstrip()
    return last.endswith((".", "!")) and not last.endswith(("...", "\u2026"))


class DialogSnapshot(NamedTuple):
    """One dialog state: (floor, user, assistant), as ``DialogState`` carries it."""

    floor: str
    user: str
    assistant: str


class DialogStateMachine:
    """The pure state machine (see the module docstring): ``step`` once per tick, ``assistant_*`` on events."""

    def __init__(
        self,
        timings: DialogTimings | None = None,
        *,
        threshold: float = 0.5,
        backchannel_max_words: int = 3,
        period: float = 0.2,
    ) -> None:
        if not (isinstance(period, float | int) and 0.0 < period <= 10.0):
            raise ValueError(f"DialogStateMachine(period=...) must be seconds in (0, 10], got {period!r}")
        self.timings = timings or DialogTimings()
        self.period = float(period)
        self.threshold = threshold
        self.backchannel_max_words = backchannel_max_words
        self.user = "yielding"
        self.assistant = "silent"
        self.backchannels = 0
        self.interruptions = 0
        self.false_interruptions = 0
        self._run = 0  # consecutive active ticks
        self._run_text = ""  # text of the current stretch of activity
        self._confirmed = False  # the current stretch counts as speech
        self._overlap = False  # it began while the assistant was speaking (and has not barged in)
        self._interrupted = False  # it reached the barge-in threshold
        self._silence = 0  # ticks since the user's speech ended
        self._silence_s = 0.0  # seconds since it ended, from the chunk's speech_end when it came with one
        self._final: bool | None = None  # the prosody of the last speech end (speech_final), None when unheard
        self._idle = 0  # ticks with neither side speaking
        self._cue = "none"  # how the last stretch of speech ended: none, plain, thinking, inviting, backchannel
        self._closed = False  # the last stretch of speech ended a closed sentence
        self._after_interruption = False  # the last stretch was a short interruption without a cue
        self._audio_only = False  # the last stretch of speech came without words
        self._turn_text = ""
        self._utterances: dict[int, int] = {}  # active utterance id -> generation
        self._backchannel_generations: set[int] = set()

    @property
    def floor(self) -> str:
        """Who holds the floor now: ``user``, ``assistant`` or ``none``."""
        if self.user == "interrupting":
            return "user"
        if self.user == "speaking":
            return "assistant" if self._overlap and self.assistant == "speaking" else "user"
        if self.assistant == "speaking":
            return "assistant"
        return "user" if self.user == "thinking" else "none"

    @property
    def snapshot(self) -> DialogSnapshot:
        """The current (floor, user, assistant)."""
        return DialogSnapshot(self.floor, self.user, self.assistant)

    # --- the user side, once per tick ----------------------------------------------------------------------

    def step(
        self, speech_prob: float, text: str = "", speech_end: float | None = None, speech_final: bool | None = None
    ) -> DialogSnapshot:
        """Advance one tick with that tick's speech probability, text, and (when sound ended inside the tick)
        the end's offset in seconds and its prosody; return the new snapshot."""
        t = self.timings
        end = None if speech_end is None else min(max(float(speech_end), 0.0), self.period)
        typed = bool(text.strip())
        if (speech_prob >= self.threshold or typed) and self._run == 0:
            self._final = None  # a new stretch: the last one's prosody says nothing about how this one ends
        if end is not None:
            self._final = speech_final
        if speech_prob >= self.threshold or typed:
            if self._run == 0:
                self._overlap, self._interrupted, self._run_text = self.assistant == "speaking", False, ""
            self._run += 1
            self._run_text += f" {text}" if typed else ""
            if not self._confirmed and (self._run >= t.onset or typed):
                self._confirmed = True
                if self.user not in ("pausing", "thinking") or self._cue == "backchannel":
                    self._turn_text = ""  # a new turn begins (a pause or thinking continues the same one)
                self._turn_text += self._run_text
            elif self._confirmed and typed:
                self._turn_text += f" {text}"
            if self._confirmed:
                self._silence = self._idle = 0
                # Silence already at the end of this tick counts: the clock starts at the true end.
                self._silence_s = 0.0 if end is None else self.period - end
                self._speaking()
                return self.snapshot
        else:
            if self._confirmed:
                self._ended()
            self._run, self._confirmed = 0, False
        # The first silent tick holding the end starts the clock there; later ones add whole ticks.
        self._silence_s = self.period - end if end is not None and self._silence == 0 else self._silence_s + self.period
        self._silence += 1
        self._idle = self._idle + 1 if self.assistant == "silent" else 0
        self._silent()
        return self.snapshot

    def _speaking(self) -> None:
        if self._overlap and self.assistant != "speaking":
            self._overlap = False  # the assistant stopped: the user simply has the turn now
        words = _WORD.findall(self._run_text.lower())
        # Words that could be an "mm-hm" get until backchannel_max to show they are more; anything else
        # (audio alone, or a word that is no backchannel) interrupts after barge_in.
        acknowledging = is_backchannel(words)
        if self._overlap and (
            self._run >= (self.timings.backchannel_max if acknowledging else self.timings.barge_in)
            or len(words) > self.backchannel_max_words
        ):
            self._overlap, self._interrupted = False, True
            self.interruptions += 1
        self.user = "interrupting" if self._interrupted else "speaking"

    def _ended(self) -> None:
        short = self._run < self.timings.backchannel_max
        # A short overlap is a backchannel only if what was said (when a transcript came) is backchannel words:
        # a short "stop please" over the assistant is a turn, not an "mm-hm".
        words = _WORD.findall(self._run_text.lower())
        acknowledging = not words or is_backchannel(words)
        if self._overlap and short and acknowledging and self.assistant == "speaking":
            self.backchannels += 1
            self._cue = "backchannel"
            return
        self._audio_only = not self._run_text.strip()
        self._cue = "plain" if self._audio_only else text_cue(self._turn_text)
        self._closed = self._cue == "plain" and bool(self._run_text.strip()) and _closes(self._turn_text)
        self._after_interruption = self._interrupted and short and self._cue == "plain"
        self.false_interruptions += self._after_interruption

    def _silent(self) -> None:
        t = self.timings
        if self._idle >= t.away:
            self.user = "away"
        elif self.user == "away" or self._cue == "none":
            return
        elif self._cue == "backchannel":
            self.user = "pausing"
        elif self._cue == "thinking":
            self.user = "thinking" if self._waited() < t.end_of_turn_max else "yielding"
        elif self._cue == "inviting":
            self.user = "inviting"
        else:
            wait = (t.false_interruption if self._after_interruption
                    else t.end_of_turn_closed - 1 if self._closed else self._audio_wait())
            self.user = "pausing" if self._waited() < wait else "yielding"

    def _waited(self) -> float:
        """Silence since the end of speech, in (fractional) ticks; a hair over so that whole ticks compare
        as they did before speech_end existed."""
        return self._silence_s / self.period + 1e-6

    def _audio_wait(self) -> int:
        """Ticks to wait after plain speech: for audio without words a continuing (level or rising) end waits
        longer; a final-sounding one keeps ``end_of_turn``, since a short dip inside an utterance (between two
        words) can sound final too and must not hand the turn over. Words or no prosody heard keep ``end_of_turn``."""
        t = self.timings
        if not self._audio_only or self._final is None:
            return t.end_of_turn
        return t.end_of_turn if self._final else max(t.end_of_turn_continuing, t.end_of_turn)

    # --- the assistant side, on events ---------------------------------------------------------------------

    def assistant_started(self, utterance_id: int, generation: int) -> DialogSnapshot:
        """The assistant began an utterance."""
        self._utterances[utterance_id] = generation
        return self._assistant()

    def assistant_ended(self, utterance_id: int) -> DialogSnapshot:
        """The assistant's utterance ended (completed or interrupted)."""
        generation = self._utterances.pop(utterance_id, None)
        if generation is not None:  # flags of older generations can no longer apply
            self._backchannel_generations = {g for g in self._backchannel_generations if g >= generation}
        return self._assistant()

    def assistant_controls(self, generation: int, controls: list[str]) -> DialogSnapshot:
        """Control tokens of an ``OutputChunk``: one containing "backchannel" flags that generation."""
        if any("backchannel" in c.lower() for c in controls):
            self._backchannel_generations.add(generation)
        return self._assistant()

    def _assistant(self) -> DialogSnapshot:
        if not self._utterances:
            self.assistant = "silent"
        else:
            latest = self._utterances[max(self._utterances)]
            self.assistant = "backchanneling" if latest in self._backchannel_generations else "speaking"
            self._idle = 0
        return self.snapshot


class DialogStateActor(Actor):
    """Runs a :class:`DialogStateMachine` on the session's ``InputChunk``s and the assistant's speech events,
    publishing ``DialogState`` on every change. Timings default to :class:`DialogTimings` computed for the
    session's tick period."""

    subscriptions = (InputChunk, SpeechStarted, SpeechEnded, OutputChunk)

    def __init__(
        self,
        timings: DialogTimings | None = None,
        *,
        threshold: float = 0.5,
        backchannel_max_words: int = 3,
        name: str = "dialog_state",
    ) -> None:
        super().__init__(name)
        self._timings = timings
        self.machine = DialogStateMachine(timings, threshold=threshold, backchannel_max_words=backchannel_max_words)
        self.published: DialogSnapshot | None = None

    async def on_start(self) -> None:
        """Compute the default timings for the session's tick period."""
        period = self.session.clock.period
        if self._timings is None and not math.isclose(period, 0.2):
            self.machine.timings = DialogTimings.from_seconds(period)
        self.machine.period = period

    async def handle(self, message: Message) -> None:
        """Advance the machine; publish ``DialogState`` if the state changed."""
        machine = self.machine
        match message:
            case InputChunk(speech_prob=prob, text=text, speech_end=end, speech_final=final):
                snapshot = machine.step(prob, text, end, final)
            case SpeechStarted(utterance_id=uid, generation=generation):
                snapshot = machine.assistant_started(uid, generation)
            case SpeechEnded(utterance_id=uid):
                snapshot = machine.assistant_ended(uid)
            case OutputChunk(generation=generation, controls=controls) if controls:
                snapshot = machine.assistant_controls(generation, controls)
            case _:
                return
        if snapshot != self.published:
            self.published = snapshot
            await self.publish(DialogState(floor=snapshot.floor, user=snapshot.user, assistant=snapshot.assistant))
