"""Randomized training dialogs, built as scenarios with :class:`~microturn.scenarios.ScenarioBuilder`.

A dialog is a chain of 2–5 *segments*, each drawn from :data:`CATEGORIES` (a greeting, a delegated question,
a barge-in, a thinking pause...). A segment starts a random gap after the previous one's last user event plus
an estimate of how long the assistant will be busy answering it; the estimate is rough on purpose, so some
turns overlap the assistant and the oracle has to deal with that too. Voices, speaking rates, latencies of
tools and of the background reasoner, how results are delivered, and when interruptions land are all drawn
from one :class:`random.Random` seeded by the dialog's seed, so a dialog is a pure function of it.

Seeds: :func:`dialog_seed` maps (corpus seed, split, index) to a dialog seed whose lowest bit is the split
(0 train, 1 held-out), so training and held-out dialogs can never share a seed.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import msgspec

from microturn.scenarios import Scenario, ScenarioBuilder, validate

__all__ = [
    "CATEGORIES",
    "GENERATOR_VERSION",
    "GeneratedDialog",
    "dialog_seed",
    "generate_dialogs",
    "make_dialog",
]

GENERATOR_VERSION = 3
"""Bump whenever a seed would give a different dialog (phrase pools, draws, their order) or the oracle would label
it differently (2: the oracle holds its utterance while the user makes a sound over it; 3: its words go out a tick ahead
of their slots)."""

CATEGORIES = (
    "greeting",
    "question",
    "time",
    "arithmetic",
    "reminder",
    "decline",
    "self_correction",
    "pause_filled",
    "pause_silent",
    "backchannel",
    "barge_in",
    "noise",
    "image",
    "translation",
    "away",
)
"""Segment categories a dialog is made of (``away`` only ever ends a dialog)."""

# "away" is drawn separately (it ends a dialog and costs 17 s of session time).
_WEIGHTS = {c: 1.0 for c in CATEGORIES if c != "away"} | {"greeting": 1.3, "question": 1.3, "barge_in": 1.3}

VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
VARIANTS = ("", "", "+f2", "+f3", "+f4", "+m2", "+m3", "+m5")
WPMS = tuple(range(140, 230, 10))
"""Speaking rates drawn per dialog (steps of 10 keep the espeak-ng cache reusable across dialogs)."""

REPLY_RATE = 2.5
"""Words per second the scripted policy speaks (0.5 words per 200 ms tick)."""
REPLY_LATENCY = 0.7
"""Rough seconds from the end of a user turn to the assistant's first word."""

# --- phrase pools ---------------------------------------------------------------------------------------------

_GREETINGS = (
    ("hello, how are you doing today?", 10), ("hi there", 7), ("good morning", 7), ("hey, how are you?", 10),
    ("good evening", 7), ("hello", 7), ("thanks a lot", 5), ("thank you, goodbye", 5),
    ("I just got back from a long walk", 8), ("I would like a window seat.", 7), ("my name is Sam", 6),
    ("the weather is lovely today", 7), ("good afternoon, how are you?", 10),
)
_QUESTIONS = (
    ("what is the capital of France?", "capital", "The capital of France is Paris."),
    ("what are the opening hours of the museum?", "opening hours",
     "The museum opens at nine in the morning and closes at six in the evening, every day except Monday."),
    ("who wrote the novel war and peace?", "war and peace", "War and Peace was written by Leo Tolstoy."),
    ("how tall is the eiffel tower?", "eiffel", "The Eiffel Tower is about three hundred and thirty metres tall."),
    ("is my flight to Boston delayed?", "flight", "Your flight to Boston is on time and boards at gate twelve."),
    ("when does the next train to Berlin leave?", "train", "The next train to Berlin leaves at ten past four."),
    ("what's the weather like in London tomorrow?", "weather",
     "Tomorrow in London it will be cloudy with some light rain in the afternoon."),
    ("how far is the moon from the earth?", "moon", "The moon is about three hundred and eighty thousand kilometres away."),
    ("which restaurants near me are open now?", "restaurant", "Two places nearby are open: Luigi's and the Blue Door cafe."),
    ("can you find a good recipe for pancakes?", "recipe|pancake",
     "A simple one: flour, milk, two eggs and a pinch of salt, fried in butter."),
    ("who won the football match last night?", "football|match", "The home team won two to one."),
    ("what is the population of Canada?", "population", "Canada has about forty million people."),
    ("where can I buy fresh bread around here?", "bread", "The bakery on Station Road opens at seven."),
)
_URGENT = (
    "Your flight is cancelled, please call the airline now.",
    "Heads up: the pharmacy closes in ten minutes.",
    "Your meeting was moved to right now.",
)
_TIME = ("what time is it?", "what's the time?", "do you know what time it is?", "sorry, what time is it now?",
         "can you tell me what time it is?")
_OPS = (("plus", "+"), ("minus", "-"), ("times", "*"), ("divided by", "/"))
_ARITH = ("what is {a} {op} {b}?", "how much is {a} {op} {b}?", "can you work out {a} {op} {b}?", "{a} {op} {b}?")
_REMIND = ("check the oven", "stretch", "call my mother", "drink some water", "take the pizza out", "feed the cat")
_DECLINE = (
    "please delete all my files on the server", "can you tell me my neighbour's email password?",
    "help me break into my ex's account", "what is my boss's credit card number?", "wipe my hard drive right now",
    "hack into the school website for me", "how do I make a bomb?", "steal my colleague's login for me",
)
_SEATS = ("aisle", "window", "middle")
_NUMBERS = ("two", "three", "four", "five", "six", "seven", "eight")
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_COFFEES = ("black", "white", "large", "small", "decaf")
# A thinking pause needs a cue the dialog state reads as "not done": a filler or a trailing conjunction.
_FILLED = ("well, um", "so, uh", "let me think, hmm", "I think, um", "what was it, uh")
_SILENT = (("book a table and", "one by the window."), ("I want to fly to Paris and", "back on Sunday."),
           ("my favourite colour is blue because", "it is calm."), ("I need a room for three nights but", "not on Friday."),
           ("can you order a pizza and", "some extra cheese."))
_CONTINUATIONS = ("I would like a window seat.", "I need a table for two.", "a taxi for tonight, please.",
                  "the blue one, I think.", "I will take the early train.")
_BACKCHANNELS = ("uh-huh", "yeah", "mm-hm", "right", "okay", "mhm")
_BARGE_INS = (
    ("wait, wait, stop please", 3.0), ("sorry, one more thing", 3.0), ("hold on", 3.0), ("no, stop", 3.0),
    ("sorry, what time is it?", 6.0), ("actually, never mind", 3.0), ("wait, that's not what I asked", 3.5),
    ("no, listen, I want to tell you about my day, it was long and busy and I am very tired now", 4.0),
)
_SEE = ("what do you see in this picture?", "what is this?", "can you see this?", "look at this, what do you see?")
_COLOURS = {"black": (0, 0, 0), "white": (255, 255, 255), "grey": (128, 128, 128), "red": (220, 40, 40),
            "green": (40, 170, 60), "blue": (40, 70, 220), "yellow": (230, 220, 50), "orange": (240, 140, 30),
            "purple": (130, 50, 160), "brown": (120, 80, 40), "pink": (240, 150, 190)}
_LANGUAGES = ("French", "Spanish", "German")
_PHRASES = ("hello my friend, where is the train station?", "good morning, I would like a coffee please",
            "thank you, the water is good", "my friend has a cat and a dog", "where is the house?",
            "I like the city today", "yes please, and a coffee")


@dataclass
class GeneratedDialog:
    """A generated scenario and what went into it (the manifest's histogram counts ``categories``)."""

    index: int
    seed: int
    scenario: Scenario
    categories: list[str]
    mode: str
    voice: str
    wpm: int
    world: str


def dialog_seed(seed: int, index: int, *, heldout: bool = False) -> int:
    """The seed of dialog ``index`` of the corpus ``seed``: a 63-bit hash whose low bit is the split, so train
    and held-out seeds are disjoint by construction."""
    split = "heldout" if heldout else "train"
    digest = hashlib.sha256(f"microturn-dialog/{GENERATOR_VERSION}/{split}/{seed}/{index}".encode()).digest()
    return (int.from_bytes(digest[:8], "little") >> 2) << 1 | int(heldout)


# --- building ------------------------------------------------------------------------------------------------


@dataclass
class _Ctx:
    """The dialog under construction: the builder, the draws, and where the chain of segments stands."""

    b: ScenarioBuilder
    rng: random.Random
    mode: str
    wpm: int
    builtin: bool
    last: str | None = None  # id of the event the next segment follows
    busy: float = 0.0  # estimated seconds the assistant talks after ``last`` ends
    t: float = 0.0  # estimated session time at the end of ``last``
    ids: int = 0
    tools: dict[str, tuple[float, object, str | None]] = field(default_factory=dict)

    def new_id(self) -> str:
        self.ids += 1
        return f"e{self.ids}"

    def speech_seconds(self, text: str, wpm: int | None = None) -> float:
        words = len(text.split())
        return words * 60.0 / (300 if self.mode == "text" else (wpm or self.wpm))

    def start(self) -> dict[str, object]:
        """Trigger keywords for a segment's first event: a gap after the assistant is expected to be done."""
        gap = self.rng.uniform(0.2, 2.0)
        if self.last is None:
            at = round(self.rng.uniform(0.2, 1.2), 2)
            self.t = at
            return {"at": at}
        delay = self.busy + gap
        self.t += delay
        return {"after": f"event:{self.last}", "delay_ms": round(delay * 1000)}

    def say(self, text: str, *, busy: float, role: str = "turn", **when: object) -> str:
        """A user turn that ends a segment (the next segment follows it)."""
        eid = self.new_id()
        wpm = self._jitter()
        self.b.say(text, role=role, wpm=wpm, id=eid, **when)  # type: ignore[arg-type]
        self.t += self.speech_seconds(text, wpm)
        self.last, self.busy = eid, busy
        return eid

    def _jitter(self) -> int | None:
        if self.mode == "text":
            return None  # text keeps the format's one word per tick (a slower one reads as pauses)
        return max(80, min(450, self.wpm + self.rng.choice((-10, 0, 0, 10))))

    def reply(self, text: str) -> float:
        """Estimated seconds the assistant is busy with a reply of ``text``."""
        return REPLY_LATENCY + len(text.split()) / REPLY_RATE

    def tool(self, name: str, latency_ms: float, result: object, error: str | None) -> None:
        self.tools.setdefault(name, (latency_ms, result, error))


def _log_uniform(rng: random.Random, lo: float, hi: float) -> float:
    return lo * (hi / lo) ** rng.random()


def _greeting(c: _Ctx) -> None:
    text, words = c.rng.choice(_GREETINGS)
    c.say(text, busy=REPLY_LATENCY + words / REPLY_RATE, **c.start())


def _background(c: _Ctx, keyword: str, result: str) -> float:
    """Script how the background reasoner answers ``keyword``; the busy estimate of the whole exchange."""
    rng = c.rng
    latency = round(_log_uniform(rng, 300, 6000))
    delivery = rng.choices(("when_idle", "interrupt", "silent"), (0.75, 0.15, 0.1))[0]
    error = "the search service is unavailable" if rng.random() < 0.1 else None
    if delivery == "interrupt" and error is None:
        result = rng.choice(_URGENT)
    progress = ["still looking"] if rng.random() < 0.2 else []
    c.b.background(goal=keyword, latency_ms=latency, result=result, error=error, delivery=delivery,
                   progress=progress, started=rng.random() < 0.2)
    holding = c.reply("Let me look that up.")
    spoken = 0.0 if delivery == "silent" else len((error or result).split()) / REPLY_RATE + 0.5
    return max(holding, latency / 1000 + 0.4) + spoken


def _question(c: _Ctx) -> str:
    text, keyword, result = c.rng.choice(_QUESTIONS)
    busy = _background(c, keyword, result)
    return c.say(text, busy=busy, **c.start())


def _time(c: _Ctx) -> None:
    latency = round(_log_uniform(c.rng, 30, 4000))
    error = "the clock service is unavailable" if c.rng.random() < 0.1 else None
    c.tool("session_time", latency, None, error)
    busy = max(c.reply("Let me check the time."), latency / 1000 + 0.5) + 3.0
    c.say(c.rng.choice(_TIME), busy=busy, **c.start())


def _arith_text(c: _Ctx) -> tuple[str, object]:
    word, sym = c.rng.choice(_OPS)
    a, b = c.rng.randint(2, 99), c.rng.randint(2, 20)
    value = {"+": a + b, "-": a - b, "*": a * b, "/": round(a / b, 4)}[sym]
    return c.rng.choice(_ARITH).format(a=a, op=word, b=b), value


def _arithmetic(c: _Ctx) -> None:
    text, value = _arith_text(c)
    latency = round(_log_uniform(c.rng, 30, 2000))
    c.tool("calculate", latency, value, "the calculator crashed" if c.rng.random() < 0.05 else None)
    c.say(text, busy=max(2.5, latency / 1000 + 0.5) + 2.5, **c.start())


def _reminder(c: _Ctx) -> None:
    seconds = c.rng.randint(3, 12)
    what = c.rng.choice(_REMIND)
    text = f"remind me in {seconds} seconds to {what}"
    c.say(text, busy=c.reply(f"Okay, I will remind you in {seconds} seconds to {what}."), **c.start())


def _decline(c: _Ctx) -> None:
    c.say(c.rng.choice(_DECLINE), busy=c.reply("Sorry, I can't help with that. Anything else?"), **c.start())


def _self_correction(c: _Ctx) -> None:
    rng = c.rng
    kind = rng.randrange(5)
    if kind == 0:
        a, b = rng.sample(_SEATS, 2)
        text = f"I would like an {a} seat, no wait, I mean a {b} seat" if a[0] in "aeiou" else \
            f"I would like a {a} seat, no wait, I mean a {b} seat"
    elif kind == 1:
        a, b = rng.sample(_NUMBERS, 2)
        text = f"book a table for {a}, sorry, I meant {b}"
    elif kind == 2:
        x, y, z = rng.randint(2, 20), rng.randint(2, 12), rng.randint(2, 12)
        text = f"what is {x} times {y}, sorry, I meant {x} times {z}"
        c.tool("calculate", 50.0, x * z, None)
    elif kind == 3:
        a, b = rng.sample(_COFFEES, 2)
        text = f"I want a {a} coffee, no wait, I mean a {b} coffee"
    else:
        a, b = rng.sample(_DAYS, 2)
        text = f"send it on {a}, actually {b}"
    c.say(text, busy=5.0, **c.start())


def _pause(c: _Ctx, filled: bool) -> None:
    if filled:
        first, second = c.rng.choice(_FILLED), c.rng.choice(_CONTINUATIONS)
    else:
        first, second = c.rng.choice(_SILENT)
    eid = c.new_id()
    c.b.say(first, role="partial", wpm=c._jitter(), id=eid, **c.start())  # type: ignore[arg-type]
    pause = round(c.rng.uniform(0.8, 2.6), 2)
    c.b.pause(pause)
    c.t += c.speech_seconds(first) + pause
    c.say(second, busy=4.5)  # follows the pause


def _backchannel(c: _Ctx) -> None:
    # A long answer to talk "mm-hm" over: a delegated question, or a greeting's reply.
    if c.rng.random() < 0.6:
        q = _question(c)
        span = c.busy
    else:
        text, words = c.rng.choice(_GREETINGS[:5])
        q = c.say(text, busy=REPLY_LATENCY + words / REPLY_RATE, **c.start())
        span = c.busy
    offset = REPLY_LATENCY + 0.4
    for _ in range(c.rng.randint(1, 3)):
        offset += c.rng.uniform(0.6, 2.0)
        if offset > span + 1.0:
            break
        word = c.rng.choice(_BACKCHANNELS)
        c.b.say(word, role="backchannel", after=f"event:{q}", delay_ms=round(offset * 1000),
                wpm=None if c.mode == "text" else c.rng.choice((220, 240, 260, 280)),
                transcript=c.rng.random() < 0.6)


def _barge_in(c: _Ctx) -> None:
    rng = c.rng
    if rng.random() < 0.5:
        text, words = rng.choice(_GREETINGS[:5])
        q = c.say(text, busy=REPLY_LATENCY + words / REPLY_RATE, **c.start())
    else:
        q = _question(c)
    answer = c.busy
    delay = REPLY_LATENCY + rng.uniform(0.0, max(0.4, answer - REPLY_LATENCY))
    words, busy = rng.choice(_BARGE_INS)
    if "time" in words:
        c.tool("session_time", 50.0, None, None)
    eid = c.new_id()
    c.b.interrupt(words, after=f"event:{q}", delay_ms=round(delay * 1000), id=eid, wpm=c._jitter(),
                  transcript=rng.random() < 0.85)
    c.t += delay + c.speech_seconds(words)
    c.last, c.busy = eid, busy


def _noise(c: _Ctx) -> None:
    rng = c.rng
    text, words = rng.choice(_GREETINGS[:5])
    q = c.say(text, busy=REPLY_LATENCY + words / REPLY_RATE, **c.start())
    delay = round((REPLY_LATENCY + rng.uniform(0.2, 2.5)) * 1000)
    seed = rng.randrange(1 << 16)
    if rng.random() < 0.5:
        c.b.cough(round(rng.uniform(0.15, 0.4), 2), level=round(rng.uniform(0.15, 0.5), 2), seed=seed,
                  after=f"event:{q}", delay_ms=delay)
    else:
        c.b.noise(round(rng.uniform(0.2, 0.6), 2), level=round(rng.uniform(0.03, 0.2), 3), seed=seed,
                  after=f"event:{q}", delay_ms=delay)


def _image(c: _Ctx) -> None:
    rng = c.rng
    pattern = rng.choices(("solid", "checker", "gradient"), (0.6, 0.2, 0.2))[0]
    colour = _COLOURS[rng.choice(sorted(_COLOURS))]
    size = {"width": 40 * rng.randint(1, 4), "height": 40 * rng.randint(1, 4)}
    text = rng.choice(_SEE)
    if rng.random() < 0.5:  # shown before the question
        eid = c.new_id()
        c.b.image(pattern=pattern, color=colour, id=eid, **size, **c.start())  # type: ignore[arg-type]
        delay = c.rng.uniform(0.1, 0.8)
        c.t += delay
        c.say(text, busy=5.0, after=f"event:{eid}", delay_ms=round(delay * 1000))
    else:  # shown mid-sentence
        q = c.say(text, busy=5.0, **c.start())
        delay = round(c.rng.uniform(0.0, 0.8) * 1000)
        c.b.image(pattern=pattern, color=colour, after=f"event:{q}:start", delay_ms=delay, **size)  # type: ignore[arg-type]


def _translation(c: _Ctx) -> None:
    rng = c.rng
    language = rng.choice(_LANGUAGES)
    c.say(f"translate what I say into {language}",
          busy=c.reply(f"Okay, I will translate what you say into {language}."), **c.start())
    for phrase in rng.sample(_PHRASES, rng.randint(1, 2)):
        c.say(phrase, busy=1.5, **c.start())
    c.say("stop translating", busy=c.reply("Okay, I stopped translating."), **c.start())


_SEGMENTS: dict[str, Callable[[_Ctx], object]] = {
    "greeting": _greeting,
    "question": _question,
    "time": _time,
    "arithmetic": _arithmetic,
    "reminder": _reminder,
    "decline": _decline,
    "self_correction": _self_correction,
    "pause_filled": lambda c: _pause(c, True),
    "pause_silent": lambda c: _pause(c, False),
    "backchannel": _backchannel,
    "barge_in": _barge_in,
    "noise": _noise,
    "image": _image,
    "translation": _translation,
}


def make_dialog(
    seed: int,
    *,
    index: int = 0,
    text_fraction: float = 0.25,
    late_reply: float = 0.0,
    turns: tuple[int, int] = (2, 5),
    away_fraction: float = 0.08,
    categories: list[str] | None = None,
    name: str | None = None,
) -> GeneratedDialog:
    """The dialog of ``seed``: ``turns`` (min, max) segments drawn from :data:`CATEGORIES` (or exactly
    ``categories``), in text mode with probability ``text_fraction``, else espeak-ng speech."""
    rng = random.Random(seed)
    mode = "text" if rng.random() < text_fraction else "speech"
    voice = rng.choice(VOICES) + rng.choice(VARIANTS)
    wpm = rng.choice(WPMS)
    if categories is None:
        names = [n for n in CATEGORIES if n != "away"]
        weights = [_WEIGHTS[n] for n in names]
        chosen = rng.choices(names, weights, k=rng.randint(*turns))
        if rng.random() < away_fraction:
            chosen.append("away")
    else:
        unknown = [n for n in categories if n not in CATEGORIES]
        if unknown:
            raise ValueError(f"unknown dialog categories {unknown}; known: {', '.join(CATEGORIES)}")
        chosen = list(categories)
    # Reminders need the real set_timer (its firing comes back as a background update).
    builtin = "reminder" in chosen or rng.random() < 0.3
    b = ScenarioBuilder(name or f"dialog-{seed:016x}", category="training", tags=sorted(set(chosen)) + [mode])
    # late_reply: the oracle sometimes answers a tick or three late, so the data shows what to do after a
    # missed first tick (answer now), a state a model that only ever saw prompt answers never learns.
    b.model("scripted", seed=rng.randrange(1 << 31), options={"late_reply": late_reply} if late_reply else {})
    b.speech(mode, wpm=None if mode == "text" else wpm, voice=voice)
    c = _Ctx(b, rng, mode, wpm, builtin)
    tail = 2.0
    for category in chosen:
        if category == "away":
            tail = rng.uniform(16.5, 19.0)  # the away timeout is 15 s of silence on both sides
            continue
        _SEGMENTS[category](c)
    if builtin:
        b.world(tools="builtin")
    else:
        for tool, (latency, result, error) in sorted(c.tools.items()):
            b.tool(tool, latency_ms=latency, result=result, error=error)
        if "calculate" not in c.tools:
            b.tool("calculate", latency_ms=50.0)  # offered, so a stray arithmetic phrase gets an answer
        if "session_time" not in c.tools:
            b.tool("session_time", latency_ms=50.0)
    if rng.random() < 0.5:  # otherwise an unmatched goal fails honestly, which the oracle apologises for
        b.background(latency_ms=round(_log_uniform(rng, 300, 3000)))
    # The duration is known only now: rebuild the checked scenario with it.
    scenario = validate(msgspec.structs.replace(b.build(), duration=round(c.t + c.busy + tail, 1)))
    return GeneratedDialog(index, seed, scenario, chosen, mode, voice, wpm, "builtin" if builtin else "scripted")


def generate_dialogs(
    seed: int, count: int, *, heldout: bool = False, start: int = 0, **options: object
) -> Iterator[GeneratedDialog]:
    """Dialogs ``start`` .. ``start + count - 1`` of the corpus ``seed`` (train or held-out split)."""
    split = "heldout" if heldout else "train"
    for index in range(start, start + count):
        s = dialog_seed(seed, index, heldout=heldout)
        yield make_dialog(s, index=index, name=f"{split}-{seed}-{index:06d}", **options)  # type: ignore[arg-type]
