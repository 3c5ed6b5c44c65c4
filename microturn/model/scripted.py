"""The scripted policy: a rule-based micro-turn policy behind the model protocol.

It is the test double of the interaction model and the future training oracle (the target stream a learned
model imitates). It is not a model and does not pretend to understand anything: it follows a small rule table.

Each step it reads one :class:`StepInput` and emits at most ``outputs_per_tick`` words, paced at
``words_per_tick`` (default 0.5 words per 200 ms tick, i.e. 150 words per minute, the output mixer's default
speaking rate; fractional rates accumulate a credit, the first word of an utterance goes out at once, and the
later ones a tick ahead of the slot the output mixer plays them in).

Rules, in the order they are applied each step:

- **Listening.** User text accumulates into the user's turn. While the user is ``speaking``, ``pausing`` or
  ``thinking`` the policy stays silent (controls ``["silence"]``): a thinking pause is never taken over.
- **Holding.** When the user makes a sound while an utterance of ours is being heard (``StepInput.speaking``;
  backchannels and translations excepted), the policy holds it at once (control ``pause``: the output mixer
  stops playing it from the next window on and keeps its place) and says nothing more; at the first tick
  without the user's speech it goes on (``resume``). A cough or an "mm-hm" thus costs a short gap, and a real
  barge-in finds the assistant already quiet: it stops within one tick of the user's first sound.
- **Stopping.** When the user is ``interrupting``, the utterance in progress is dropped at once (the rest of the
  reply is never said) and the policy listens. The same happens when ``StepInput.speaking`` turns false while
  an utterance is half said: the output side cut it (a barge-in or an ``interrupt`` delivery). Only a fall
  counts: ``speaking`` must have been true since the utterance began, because words may reach the output side a
  tick or two after the policy says them (a model spells them out in its output slots).
- **Answering.** When the user is ``yielding`` or ``inviting`` (or, without any dialog state, after the user's
  text is followed by ``reply_after_silence`` seconds without speech), the turn is answered from the table:
  a time question -> tool call ``session_time`` and "Let me check the time."; "how are you" -> a pleasantry;
  another question (a wh-word or auxiliary first, or a "?") -> ``delegate`` with the question as the goal and
  "Let me look that up."; a greeting, thanks or goodbye -> a stock answer; anything else -> an
  acknowledgement that echoes the user's words. A turn made only of backchannel words ("mm-hm", "yeah") is
  not answered; a turn with speech but no text gets "I hear you.".
- **Declining.** A request on the refusal list (deleting everything, breaking into accounts, passwords and
  card numbers, weapons...) gets one brief, firm, friendly refusal; no tool runs and nothing is delegated.
- **Self-corrections.** "..., no wait, I mean X" / "sorry, I meant X" / "actually X": the correction replaces
  as many words at the end of what came before it, and the corrected turn is what gets answered.
- **Time awareness.** "remind me in N seconds (to X)" asks the ``set_timer`` tool (seconds, message) and
  confirms; the timer's firing comes back as a background update and is spoken.
- **Arithmetic.** An arithmetic question ("what is 12 times 7") asks the ``calculate`` tool.
- **Images.** "what do you see" / "what is this" describes the last image shown (its size in 40-pixel patches
  and its main colour, computed from the patches); without one it says it sees none.
- **Live translation.** "translate what I say into French" (Spanish, German) switches to translating: each
  piece of the user's text is spoken at once in the other language from a small word list — over the user,
  on purpose (control ``translate``) — until "stop translating" (heard even when text arrives a word at a
  time: a trailing "stop" waits for the next piece). A translated turn gets no answer of its own.
- **Away.** When the user becomes ``away`` the policy asks once whether they are still there.
- **Backchannelling.** In a long user turn (``backchannel_after`` seconds, default 3, while the user holds the
  floor and is speaking or pausing) it says one short "mm-hm"-like word, marked with control ``backchannel``.
- **Background and tools.** A final ``BackgroundUpdate`` with delivery ``interrupt`` is spoken now (the
  interaction actor has already cut the current utterance); with ``when_idle`` it is queued and spoken at the
  next idle moment (nothing playing, the user yielding or inviting); ``silent`` is never spoken. A ``failed``
  update gets an apology when idle. A ``ToolResult`` is phrased ("It is 4.2 seconds into our conversation.")
  and spoken when idle.

Controls: ``speak`` on every step of an utterance (including steps between words), ``pause`` on every step
it is held and ``resume`` on the step it goes on, ``backchannel`` instead for
backchannels, ``end_utterance`` with its last words, ``delegate`` / ``tool_call`` with the first words of the
utterance that asks for them, ``silence`` otherwise. Choices between phrasings use ``random.Random(spec.seed)``,
so a session is a deterministic function of its inputs and seed.
"""

from __future__ import annotations

import random
import re
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from microturn.messages import BackgroundUpdate, ToolResult

from .protocol import BlockingModelSession, ModelSpec, StepInput, StepOutput, ToolRequest
from .references import MAX_WORDS, REF, bg_ref, tool_ref, words_ref
from .turn_cues import BACKCHANNEL_WORDS, is_backchannel

__all__ = ["BACKCHANNEL_WORDS", "ScriptedPolicy", "ScriptedSession"]

"""Words that, alone, make a user turn a backchannel rather than something to answer."""

_LISTENING = frozenset({"speaking", "pausing", "thinking", "interrupting"})
_TURN_END = frozenset({"yielding", "inviting"})
_QUESTION_START = frozenset(
    {"what", "who", "where", "when", "why", "how", "which", "whose", "is", "are", "can", "could", "would", "will"}
    | {"do", "does", "did", "should"}
)
_BACKCHANNELS = ("mm-hm", "uh-huh", "right")
_ACKS = ("I see.", "Got it.", "Okay.")
_GREETINGS = ("Hello! How can I help you today?", "Hi there! What can I do for you?")
_TIME = re.compile(r"\bwhat time\b|\bwhat's the time\b")
_TIME_Q = re.compile(r"\bthe time\b")
_HOW_ARE_YOU = re.compile(r"\bhow are you\b")
_GREETING = re.compile(r"\b(hello|hi|hey|good (morning|afternoon|evening))\b")
_THANKS = re.compile(r"\b(thanks|thank you)\b")
_BYE = re.compile(r"\b(bye|goodbye)\b")
_DECLINE = re.compile(
    r"\b(delete (all|every)|wipe (my|the|all)|format (my|the) (disk|drive)|hack|break into|steal|password|"
    r"credit card|card number|social security|bomb|weapon|poison)\b"
)
_CORRECTION = re.compile(r"(?:,\s*|\s)(?:no wait,?|no,? wait,?|sorry,?|actually,?)?\s*\bi (?:mean|meant)\b,?\s*|"
                         r"(?:,\s*|\s)no wait,?\s*|(?:,\s*|\s)actually,?\s+", re.IGNORECASE)
_REMIND = re.compile(r"\bremind me in (\d+(?:\.\d+)?) (second|seconds|minute|minutes)\b(?: to (.+))?")
_ARITH = re.compile(r"(-?\d+(?:\.\d+)?)\s*(plus|minus|times|multiplied by|divided by|over|[-+*/x])\s*(-?\d+(?:\.\d+)?)")
_OPERATORS = {"plus": "+", "minus": "-", "times": "*", "multiplied by": "*", "x": "*", "divided by": "/", "over": "/"}
_SEE = re.compile(r"\b(what do you see|what is this|what's this|look at this|can you see)\b")
_TRANSLATE = re.compile(r"\btranslate\b.*\b(?:into|to) (french|spanish|german)\b")
_STOP_TRANSLATING = re.compile(r"\bstop translating\b")
_DECLINES = ("Sorry, I can't help with that. Anything else?",)
_WORDS = {
    "french": {"hello": "bonjour", "good": "bon", "morning": "matin", "i": "je", "you": "vous", "am": "suis",
               "is": "est", "the": "le", "a": "un", "and": "et", "train": "train", "station": "gare",
               "where": "où", "thank": "merci", "thanks": "merci", "please": "s'il vous plaît", "yes": "oui",
               "no": "non", "cat": "chat", "dog": "chien", "house": "maison", "today": "aujourd'hui",
               "tomorrow": "demain", "water": "eau", "coffee": "café", "want": "veux", "would": "voudrais",
               "like": "aime", "my": "mon", "name": "nom", "friend": "ami", "city": "ville", "it": "il"},
    "spanish": {"hello": "hola", "good": "buen", "morning": "día", "i": "yo", "you": "usted", "am": "soy",
                "is": "es", "the": "el", "a": "un", "and": "y", "train": "tren", "station": "estación",
                "where": "dónde", "thank": "gracias", "thanks": "gracias", "please": "por favor", "yes": "sí",
                "no": "no", "cat": "gato", "dog": "perro", "house": "casa", "today": "hoy", "tomorrow": "mañana",
                "water": "agua", "coffee": "café", "want": "quiero", "like": "gusta", "my": "mi",
                "name": "nombre", "friend": "amigo", "city": "ciudad"},
    "german": {"hello": "hallo", "good": "guten", "morning": "Morgen", "i": "ich", "you": "Sie", "am": "bin",
               "is": "ist", "the": "der", "a": "ein", "and": "und", "train": "Zug", "station": "Bahnhof",
               "where": "wo", "thank": "danke", "thanks": "danke", "please": "bitte", "yes": "ja", "no": "nein",
               "cat": "Katze", "dog": "Hund", "house": "Haus", "today": "heute", "tomorrow": "morgen",
               "water": "Wasser", "coffee": "Kaffee", "want": "will", "my": "mein", "name": "Name",
               "friend": "Freund", "city": "Stadt"},
}
"""The live-translation word lists: a few dozen words each (unknown words pass through unchanged)."""
_COLOURS = {
    "black": (0, 0, 0), "white": (255, 255, 255), "grey": (128, 128, 128), "red": (220, 40, 40),
    "green": (40, 170, 60), "blue": (40, 70, 220), "yellow": (230, 220, 50), "orange": (240, 140, 30),
    "purple": (130, 50, 160), "brown": (120, 80, 40), "pink": (240, 150, 190),
}


def _norm(word: str) -> str:
    return word.lower().strip(".,!?;:\"'")


@dataclass
class _Utterance:
    """Words the policy intends to say, with what its first words ask for."""

    words: list[str]
    kind: str = "reply"
    delegate: str | None = None
    tool: ToolRequest | None = None
    pos: int = 0
    source: tuple[str, ...] = ()
    """The user words a reply answers (given back if the reply is abandoned before it starts)."""


def _say(text: str, **kwargs: Any) -> _Utterance:
    return _Utterance(text.split(), **kwargs)


class ScriptedPolicy:
    """The scripted backend: opens :class:`ScriptedSession` s. Timing parameters are in seconds of session time."""

    name = "scripted"

    def __init__(
        self,
        *,
        words_per_tick: float = 0.5,
        backchannel_after: float = 3.0,
        reply_after_silence: float = 0.6,
        speech_threshold: float = 0.5,
        tick_period: float = 0.2,
        late_reply: float = 0.0,
        late_reply_max: float = 0.6,
    ) -> None:
        if not 0.0 <= late_reply <= 1.0:
            raise ValueError(f"ScriptedPolicy(late_reply=...) must be a probability in [0, 1], got {late_reply!r}")
        if words_per_tick <= 0:
            raise ValueError(f"ScriptedPolicy(words_per_tick=...) must be > 0, got {words_per_tick!r}")
        if tick_period <= 0:
            raise ValueError(f"ScriptedPolicy(tick_period=...) must be > 0, got {tick_period!r}")
        self.words_per_tick = float(words_per_tick)
        self.backchannel_ticks = max(1, round(backchannel_after / tick_period))
        self.reply_silence_ticks = max(1, round(reply_after_silence / tick_period))
        self.speech_threshold = speech_threshold
        self.late_reply = float(late_reply)
        self.late_reply_ticks = max(1, round(late_reply_max / tick_period))

    async def open_session(self, spec: ModelSpec) -> ScriptedSession:
        """Open a fresh conversation; ``spec.options["words_per_tick"]`` overrides the pacing."""
        return ScriptedSession(self, spec)


class ScriptedSession(BlockingModelSession):
    """One conversation of the scripted policy. Pure Python, computed on the calling thread."""

    def __init__(self, policy: ScriptedPolicy, spec: ModelSpec) -> None:
        self.policy = policy
        self.rng = random.Random(spec.seed)
        self.wpt = float(spec.options.get("words_per_tick", policy.words_per_tick))
        self.max_words = max(1, int(spec.outputs_per_tick))
        self.user_words: list[str] = []
        self.turn_speech = 0  # ticks of user speech in the user's current turn (for speech without text)
        self.turn_ticks = 0  # ticks the user has held the floor (for backchannels)
        self.since_backchannel = 0
        self.silent_ticks = 0
        self.current: _Utterance | None = None
        self.reply: _Utterance | None = None
        self.urgent: deque[_Utterance] = deque()
        self.idle: deque[_Utterance] = deque()
        self.credit = 0.0
        self.steps = 0
        self.n_tools = 0
        self.n_backgrounds = 0
        self.fed: list[str] = []  # the user's latest words as fed (for goals by reference), and how many dropped
        self.fed_offset = 0
        self.translate_to: str | None = None
        self.translations: deque[_Utterance] = deque()
        self.held: list[str] = []  # a trailing "stop" while translating: maybe the start of "stop translating"
        self.asked_away = False
        self.image: tuple[int, str] | None = None  # (patches, main colour) of the last image shown
        self.hold: int | None = None  # ticks a startable reply still waits (late_reply), drawn once per reply
        self.playing_kind: str | None = None  # the kind of the utterance begun last (the one being heard)
        self.paused = False  # the utterance being heard is held while the user makes a sound
        self.resuming = False  # this step ends a hold
        self.heard_current = False  # the current utterance has been seen playing (so its end is a cut)

    def step_sync(self, step_input: StepInput) -> StepOutput:
        """Observe one tick's inputs and say (at most) this tick's words."""
        self.steps += 1
        state = step_input.dialog.user if step_input.dialog is not None else None
        self._observe(step_input, state)
        self._start_next(step_input, state)
        return self._emit()

    # --- observing ------------------------------------------------------------------------------------------

    def _observe(self, inp: StepInput, state: str | None) -> None:
        chunk, dialog = inp.chunk, inp.dialog
        text = chunk.text.strip()
        self.fed += text.split()
        if len(self.fed) > MAX_WORDS:
            self.fed_offset += len(self.fed) - MAX_WORDS
            del self.fed[: len(self.fed) - MAX_WORDS]
        speech = bool(text) or chunk.speech_prob >= self.policy.speech_threshold
        if self.current is not None and self.current.pos > 0:
            if inp.speaking:
                self.heard_current = True
            elif self.heard_current:
                self._drop()  # the output side cut us off: never resume a cut utterance
        if state == "interrupting":
            self._drop()
            if self.reply is not None:
                self.user_words[:0] = self.reply.source  # not said yet: the words are part of the new turn
                self.reply = None
        self._hold(inp, state, speech)
        if chunk.n_patches:
            self.image = (chunk.n_patches, _main_colour(chunk.patches))
        if speech:
            self.asked_away = False
        if text and self.translate_to is not None:
            self._translate_piece(text.split())
        elif text:
            self.user_words.extend(text.split())
        if state == "away" and not self.asked_away and self.current is None:
            self.asked_away = True
            self.urgent.append(_say("Are you still there?", kind="away"))
        holds_floor = dialog.floor == "user" or state == "interrupting" if dialog is not None else not inp.speaking
        if speech and holds_floor:
            self.turn_speech += 1
        self.silent_ticks = 0 if speech else self.silent_ticks + 1
        in_turn = state in _LISTENING if state is not None else speech
        self.turn_ticks = self.turn_ticks + 1 if in_turn else 0
        self.since_backchannel += 1
        for update in inp.background:
            self._on_background(update)
        for result in inp.tool_results:
            self.n_tools += 1  # numbered like the interaction actor's ReferenceBook: every result fed
            if not result.ok and (result.error or "").startswith("cancelled"):
                continue  # a call cut off with its utterance: the user has moved on, nothing to report
            phrase = _phrase_tool(result, self.n_tools)
            if phrase:  # some results need no words (a timer that was set speaks when it fires)
                self.idle.append(_say(phrase, kind="tool"))
        # A tick with speech never ends a turn: the dialog state the step sees is one tick old, and the first
        # word of a new turn arrives while it still says the last turn ended.
        ended = (
            state in _TURN_END and not speech
            if state is not None
            else bool(self.user_words) and self.silent_ticks >= self.policy.reply_silence_ticks
        )
        if ended and self.held:  # the turn ended on "stop" alone: it was not the command after all
            self._translate_piece([], flush=True)
        if ended and self.translate_to is not None and not self.user_words:
            self.turn_speech = 0  # a turn translated as it came: there is nothing to answer
        elif ended and (self.user_words or self.turn_speech >= 2):
            words, self.user_words = self.user_words, []
            if self.reply is not None:  # a reply still waiting to start answers the whole turn
                words, self.reply = [*self.reply.source, *words], None
            spoke, self.turn_speech = self.turn_speech, 0
            if (words and not is_backchannel(words)) or (not words and spoke >= 2):
                self.reply = self._compose(words)

    def _translate_piece(self, words: list[str], *, flush: bool = False) -> None:
        """Queue a piece of the user's speech for translation, or keep "stop translating" as the command to
        answer. Text may arrive a word at a time, so a trailing "stop" waits for the next piece."""
        words, self.held = [*self.held, *words], []
        if _STOP_TRANSLATING.search(" ".join(_norm(w) for w in words)):
            self.user_words.extend(words)  # answered at the end of the turn
            return
        if words and _norm(words[-1]) == "stop" and not flush:
            words, self.held = words[:-1], words[-1:]
        language = self.translate_to
        if words and language is not None:
            self.translations.append(_Utterance(_translate(" ".join(words), language), kind="translation"))

    def _hold(self, inp: StepInput, state: str | None, speech: bool) -> None:
        """Hold the utterance being heard while the user makes a sound over it; go on when they stop."""
        self.resuming = False
        if not inp.speaking or state == "interrupting":
            self.paused = False  # nothing is heard any more, or it is being cut anyway
        elif speech and self.playing_kind not in ("backchannel", "translation"):
            self.paused = True
        elif self.paused and not speech:
            self.paused, self.resuming = False, True

    def _on_background(self, update: BackgroundUpdate) -> None:
        if update.status == "final":
            self.n_backgrounds += 1  # numbered like the ReferenceBook: every final update, silent ones too
        if update.delivery == "silent" or update.status not in ("final", "failed"):
            return
        text = update.text if update.status == "final" else "Sorry, I could not finish looking that up."
        if not text.strip():
            return
        # A final result is said by reference (verbatim, whatever its length); a failure is our own words.
        utterance = _say(bg_ref(self.n_backgrounds) if update.status == "final" else text, kind="background")
        if update.delivery == "interrupt" and update.status == "final":
            self._drop()
            self.urgent.append(utterance)
        else:
            self.idle.append(utterance)

    def _drop(self) -> None:
        """Stop the utterance in progress; its unsaid words are never said."""
        self.current = None
        self.credit = 0.0
        self.paused = False

    # --- deciding -------------------------------------------------------------------------------------------

    def _compose(self, words: list[str]) -> _Utterance:
        """Answer one user turn from the rule table."""
        source = tuple(words)
        text = " ".join(words)
        low = " ".join(_norm(w) for w in words)
        if not words or is_backchannel(words):
            return _say("I hear you.", source=source)
        words = _corrected(words)
        text = " ".join(words)
        low = " ".join(_norm(w) for w in words)
        if _DECLINE.search(low):
            return _say(_DECLINES[0], kind="decline", source=source)
        if self.translate_to is not None and _STOP_TRANSLATING.search(low):
            self.translate_to = None
            return _say("Okay, I stopped translating.", source=source)
        if match := _TRANSLATE.search(low):
            self.translate_to = match.group(1)
            return _say(f"Sure. I will translate what you say into {match.group(1).title()}.", source=source)
        if match := _REMIND.search(low):
            seconds = float(match.group(1)) * (60 if match.group(2).startswith("minute") else 1)
            message = f"Reminder: {match.group(3)}." if match.group(3) else "This is your reminder."
            args = {"seconds": seconds, "message": message}
            amount = f"{match.group(1)} {match.group(2)}"
            return _say(f"Okay, I will remind you in {amount}.", tool=ToolRequest(name="set_timer", args=args),
                        source=source)
        if match := _ARITH.search(low):
            expression = f"{match.group(1)} {_OPERATORS.get(match.group(2), match.group(2))} {match.group(3)}"
            return _say("Let me work that out.", kind="holding",
                        tool=ToolRequest(name="calculate", args={"expression": expression}), source=source)
        if _SEE.search(low):
            if self.image is None:
                return _say("I don't see any image yet.", source=source)
            patches, colour = self.image
            return _say(f"I see an image of {patches} patches, mostly {colour}.", source=source)
        question = _norm(words[0]) in _QUESTION_START or text.rstrip().endswith("?")
        # Order matters: the specific question rules come before the generic "I cannot answer" one.
        if _TIME.search(low) or (question and _TIME_Q.search(low)):
            return _say("Let me check the time.", kind="holding", tool=ToolRequest(name="session_time"), source=source)
        if _HOW_ARE_YOU.search(low):
            return _say("I am doing well, thank you. How can I help?", source=source)
        if question:
            return _say("Let me look that up.", kind="holding", delegate=text, source=source)
        if _GREETING.search(low):
            return _say(self.rng.choice(_GREETINGS), source=source)
        if _THANKS.search(low):
            return _say("You are welcome.", source=source)
        if _BYE.search(low):
            return _say("Goodbye, talk to you soon.", source=source)
        echo = " ".join(words[:8]).rstrip(".,!?;:")
        return _say(f"{self.rng.choice(_ACKS)} You said {echo}.", source=source)

    def _start_next(self, inp: StepInput, state: str | None) -> None:
        """Start the next utterance when nothing is being said or played."""
        if self.current is None and self.translations:
            self._begin(self.translations.popleft())  # over the user, on purpose: that is live translation
            return
        if self.current is not None or inp.speaking:
            return
        dialog = inp.dialog
        user_busy = state in _LISTENING if state is not None else self.silent_ticks == 0
        startable = (self.reply is not None or self.idle) and not user_busy and state != "away"
        if not self.urgent and startable and self._held_back():
            return
        if not startable:
            self.hold = None
        if self.urgent:
            self._begin(self.urgent.popleft())
        elif self.reply is not None and not user_busy:
            self._begin(self.reply)
            self.reply = None
        elif self._backchannel_due(state, dialog is not None and dialog.floor == "user"):
            self.since_backchannel = 0
            self._begin(_Utterance([self.rng.choice(_BACKCHANNELS)], kind="backchannel"))
        elif self.idle and not user_busy and state != "away" and self.reply is None:
            self._begin(self.idle.popleft())

    def _held_back(self) -> bool:
        """Whether a reply that could start now waits another tick (``late_reply``: training data for a model
        must show replies that come late too, or a model that misses the first tick never answers)."""
        if self.policy.late_reply <= 0:
            return False
        if self.hold is None:
            late = self.rng.random() < self.policy.late_reply
            self.hold = self.rng.randint(1, self.policy.late_reply_ticks) if late else 0
        if self.hold > 0:
            self.hold -= 1
            return True
        self.hold = None
        return False

    def _backchannel_due(self, state: str | None, user_floor: bool) -> bool:
        n = self.policy.backchannel_ticks
        if self.turn_ticks < n or self.since_backchannel < n:
            return False
        if state is None:
            return self.silent_ticks == 0
        return user_floor and state in ("speaking", "pausing")

    def _begin(self, utterance: _Utterance) -> None:
        self.current = utterance
        self.heard_current = False
        self.playing_kind = utterance.kind
        self.credit = max(0.0, 1.0 - self.wpt)  # so the first word goes out in this very step

    # --- speaking -------------------------------------------------------------------------------------------

    def _emit(self) -> StepOutput:
        u = self.current
        if self.paused:
            return StepOutput(controls=["pause"])  # no words while held, and no credit banked for later
        resume = ["resume"] if self.resuming else []
        if u is None:
            return StepOutput(controls=resume or ["silence"])
        self.credit += self.wpt
        n = min(int(self.credit + 1e-9), self.max_words, len(u.words) - u.pos)
        self.credit = min(self.credit - n, 1.0)  # a rate capped by outputs_per_tick must not bank words
        first = u.pos == 0 and n > 0
        if first:
            # The second word goes out a tick early, and with it every later one: the output side queues words
            # and plays each in its slot, and a model whose slots spell a long word over two ticks still has it
            # there in time (without the lead, such a word leaves a silent window mid-sentence).
            self.credit = max(self.credit, 1.0 - self.wpt)
        words = [self._point(w) for w in u.words[u.pos : u.pos + n]]
        u.pos += n
        controls = ["backchannel"] if u.kind == "backchannel" else ["translate"] if u.kind == "translation" else ["speak"]
        controls = resume + controls
        extra: dict[str, Any] = {}
        if first and u.delegate is not None:
            controls.append("delegate")
            # The question by reference when it is the user's words as fed (a self-correction is spelled).
            extra["delegate"] = words_ref(self.fed, u.delegate.split(), self.fed_offset) or u.delegate
        if first and u.tool is not None:
            controls.append("tool_call")
            extra["tool_call"] = u.tool
        if u.pos >= len(u.words):
            controls.append("end_utterance")
            self.current = None
        return StepOutput(text=" ".join(words), controls=controls, **extra)


    def _point(self, word: str) -> str:
        """A reference to the latest result in its short form (``\\x01T`` not ``\\x01T7``): what a model can
        learn without counting; older results keep their number."""
        if not word.startswith(REF):
            return word
        latest = {"T": self.n_tools, "B": self.n_backgrounds}
        kind, rest = word[1:2], word[2:]
        digits = len(rest) - len(rest.lstrip("0123456789"))
        if digits and kind in latest and int(rest[:digits]) == latest[kind]:
            return REF + kind + rest[digits:]
        return word


def _corrected(words: list[str]) -> list[str]:
    """Apply a spoken self-correction: the words after the last marker replace as many at the end before it."""
    text = " ".join(words)
    marks = list(_CORRECTION.finditer(text))
    if not marks:
        return words
    last = marks[-1]
    before, after = text[: last.start()].split(), text[last.end() :].split()
    if not after:
        return before or words
    if len(after) >= len(before):
        return after
    return before[: len(before) - len(after)] + after


def _translate(text: str, language: str) -> list[str]:
    """Word-by-word translation from a small list; unknown words pass through."""
    table = _WORDS[language]
    return [table.get(_norm(w), w) for w in text.split()]


def _main_colour(patches: bytes) -> str:
    """The colour name nearest the image's mean RGB."""
    pixels = np.frombuffer(patches, dtype=np.uint8).reshape(-1, 3)
    if not len(pixels):
        return "black"
    mean = pixels.mean(axis=0)
    return min(_COLOURS, key=lambda name: sum((a - b) ** 2 for a, b in zip(_COLOURS[name], mean, strict=True)))


def _phrase_tool(result: ToolResult, n: int) -> str:
    """A tool result in words, its value by reference (``n``: the result's number in the session). Call ids are
    ``"{name}-{n}"`` (the interaction actor's scheme)."""
    name = result.call_id.rsplit("-", 1)[0]
    if not result.ok:
        return f"Sorry, the {name.replace('_', ' ')} tool failed."
    value = result.value
    if name == "session_time" and isinstance(value, (int, float)):
        return f"It is {tool_ref(n)} seconds into our conversation."
    if name == "calculate":
        return f"That makes {tool_ref(n)}."
    if name == "set_timer":
        return ""
    return f"The {name.replace('_', ' ')} result is {tool_ref(n)}."
