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

from microturn.model.scripted import BACKCHANNEL_WORDS
from microturn.scenarios import Scenario, ScenarioBuilder, validate
from microturn.training import phrasing

__all__ = [
    "CATEGORIES",
    "GENERATOR_VERSION",
    "GeneratedDialog",
    "dialog_seed",
    "generate_dialogs",
    "make_dialog",
]

GENERATOR_VERSION = 4
"""Bump whenever a seed would give a different dialog (phrase pools, draws, their order) or the oracle would label
it differently (2: the oracle holds its utterance while the user makes a sound over it; 3: its words go out a tick ahead
of their slots; 4: slot-filled paraphrase pools from :mod:`microturn.training.phrasing` with a held-out phrasing
split, no scenario-library sentences)."""

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

_URGENT = (
    "Your flight is cancelled, please call the airline now.",
    "Heads up: the pharmacy closes in ten minutes.",
    "Your meeting was moved to right now.",
)
_SEATS = ("aisle", "window", "middle", "front", "back", "upper", "lower")
_NUMBERS = ("two", "three", "four", "five", "six", "seven", "eight")
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_COFFEES = ("black", "white", "large", "small", "decaf", "iced", "oat milk")
_FIXES = ("no wait,", "sorry, I meant", "I mean", "no wait, I meant")
"""Self-correction cues the oracle reads (spelled unlike the library's)."""
# A thinking pause needs a cue the dialog state reads as "not done": a filler or a trailing conjunction.
_FILLED = ("well, um", "so, uh", "let me think, hmm", "I think, um", "what was it, uh", "hmm, so", "and, uh",
           "I guess, um", "the thing is, uh", "okay so, um")
_SILENT = (("reserve two seats for the concert and", "a parking space nearby."),
           ("I am flying to Lima on Friday and", "coming home on Monday."),
           ("my brother wants the red bike because", "it is faster."),
           ("find me a flat with a balcony but", "not above the third floor."),
           ("order some noodles and", "a bottle of lemonade."),
           ("I need new shoes so", "maybe the market on Saturday."),
           ("we could meet at the library or", "the cafe next to it."),
           ("put the meeting on Wednesday unless", "Kwame is away."))
_CONTINUATIONS = ("a seat near the front.", "two tickets for the matinee.", "a taxi to the harbour, please.",
                  "the green scarf, I think.", "the late ferry home.", "a quiet room facing the garden.",
                  "three bags of oranges.", "the Tuesday class instead.")
_BACKCHANNEL_POOL = ("uh-huh", "yeah", "mm-hm", "right", "okay", "mhm", "I see", "got it", "sure", "yeah yeah",
                     "okay okay", "right right", "mm", "ok", "I see, yes", "uh huh", "alright")
# Only what the oracle reads as a backchannel (its word list grows elsewhere), so the labels never teach answering one.
_BACKCHANNELS = tuple(p for p in _BACKCHANNEL_POOL
                      if all(w.lower().strip(".,!?") in BACKCHANNEL_WORDS for w in p.split()))
_BARGE_INS = (
    ("hang on, stop there", 3.0), ("one second, please stop", 3.0), ("hold on", 3.0), ("no, stop", 3.0),
    ("excuse me, what's the time?", 6.0), ("never mind that", 3.0), ("that is not what I wanted", 3.5),
    ("stop, stop", 3.0), ("hey, quiet a moment", 3.0), ("okay, stop, that's enough", 3.0),
    ("let me tell you what happened at work, the printer broke and everybody was waiting for it all morning", 4.0),
)
_SEE = ("what's this?", "what is this thing?", "look at this", "look at this, any idea?", "can you see it?",
        "can you see the photo?", "what's this one?", "hey, look at this picture", "so what is this?")
_COLOURS = {"black": (0, 0, 0), "white": (255, 255, 255), "grey": (128, 128, 128), "red": (220, 40, 40),
            "green": (40, 170, 60), "blue": (40, 70, 220), "yellow": (230, 220, 50), "orange": (240, 140, 30),
            "purple": (130, 50, 160), "brown": (120, 80, 40), "pink": (240, 150, 190)}
_LANGUAGES = ("French", "Spanish", "German")
_TRANSLATE = ("please translate into {language} from now", "can you translate everything into {language}?",
              "translate my words into {language}", "I'd like you to translate to {language}",
              "from now on translate into {language}", "be my interpreter and translate into {language}",
              "could you translate to {language} for a while?", "translate this conversation into {language}")
_STOP = ("stop translating", "okay, stop translating now", "thanks, you can stop translating", "please stop translating")
_PHRASES = ("the bus to the station is late", "my friend likes the red car", "good night, see you tomorrow",
            "the coffee here is very good", "where is the nearest bank?", "I have a cat and a small dog",
            "the city is beautiful at night", "can I have some water, please?", "we are going home now")

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
    phrasings: str = "train"
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
        gap = _log_uniform(self.rng, 0.15, 4.0)  # wide: quick follow-ups and long silences alike
        if self.last is None:
            # sometimes a late first line: the assistant waits in silence a while before anyone speaks
            at = round(self.rng.uniform(0.2, 1.2) if self.rng.random() < 0.85 else self.rng.uniform(1.5, 6.0), 2)
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


def _opener(c: _Ctx) -> tuple[str, int]:
    """A greeting or a "how are you", with the rough length in words of the oracle's reply to it."""
    if c.rng.random() < 0.5:
        return phrasing.pick(c.rng, "how_are_you", c.phrasings), 10
    return phrasing.pick(c.rng, "greeting", c.phrasings), 7


def _greeting(c: _Ctx) -> None:
    text, words = _opener(c)
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


def _question_text(c: _Ctx) -> tuple[str, str, str]:
    """A delegated question from a slot-filled family: its text, the background goal keyword, the result."""
    rng = c.rng
    family = rng.choice(("capital", "weather", "train", "recipe"))
    if family == "capital":
        country = rng.choice(phrasing.SLOTS["country"])
        return (phrasing.pick(rng, family, c.phrasings, country=country), country.lower(),
                f"The capital of {country} is {phrasing.CAPITALS[country]}.")
    if family == "weather":
        city, day = rng.choice(phrasing.SLOTS["city"]), rng.choice(phrasing.SLOTS["day"])
        sky = rng.choice(("dry and sunny", "cloudy with light rain", "windy and cold", "warm with a few showers"))
        return (phrasing.pick(rng, family, c.phrasings, city=city, day=day), city.lower(),
                f"In {city} {day} it will be {sky}, around {rng.randint(2, 31)} degrees.")
    if family == "train":
        city = rng.choice(phrasing.SLOTS["city"])
        hour, minute = rng.randint(1, 12), rng.choice((5, 10, 15, 20, 25, 35, 40, 45, 50))
        return (phrasing.pick(rng, family, c.phrasings, city=city), city.lower(),
                f"The next train to {city} leaves at {hour}:{minute:02d} from platform {rng.randint(1, 14)}.")
    dish = rng.choice(phrasing.SLOTS["dish"])
    return (phrasing.pick(rng, family, c.phrasings, dish=dish), dish.split()[-1].lower(),
            f"For {dish} you need about {rng.randint(15, 90)} minutes and a few simple ingredients.")


def _question(c: _Ctx) -> str:
    text, keyword, result = _question_text(c)
    busy = _background(c, keyword, result)
    return c.say(text, busy=busy, **c.start())


def _time(c: _Ctx) -> None:
    latency = round(_log_uniform(c.rng, 30, 4000))
    error = "the clock service is unavailable" if c.rng.random() < 0.1 else None
    c.tool("session_time", latency, None, error)
    busy = max(c.reply("Let me check the time."), latency / 1000 + 0.5) + 3.0
    c.say(phrasing.pick(c.rng, "time", c.phrasings), busy=busy, **c.start())


def _arith_text(c: _Ctx) -> tuple[str, object]:
    word, sym = c.rng.choice(phrasing.OPERATORS)
    (a_text, a), (b_text, b) = phrasing.number(c.rng), phrasing.number(c.rng)
    if sym == "/" and b == 0:
        b_text, b = "4", 4
    value = a + b if sym == "+" else a - b if sym == "-" else a * b if sym == "*" else a / b
    value = int(value) if float(value).is_integer() else round(value, 4)
    return phrasing.pick(c.rng, "arithmetic", c.phrasings).format(a=a_text, op=word, b=b_text), value


def _arithmetic(c: _Ctx) -> None:
    text, value = _arith_text(c)
    latency = round(_log_uniform(c.rng, 30, 2000))
    c.tool("calculate", latency, value, "the calculator crashed" if c.rng.random() < 0.05 else None)
    c.say(text, busy=max(2.5, latency / 1000 + 0.5) + 2.5, **c.start())


def _reminder(c: _Ctx) -> None:
    seconds = c.rng.randint(3, 12)
    what = c.rng.choice(phrasing.SLOTS["what"])
    text = phrasing.pick(c.rng, "reminder", c.phrasings, n=str(seconds), what=what)
    c.say(text, busy=c.reply(f"Okay, I will remind you in {seconds} seconds to {what}."), **c.start())


def _decline(c: _Ctx) -> None:
    c.say(phrasing.pick(c.rng, "decline", c.phrasings), busy=c.reply("Sorry, I can't help with that. Anything else?"), **c.start())


def _an(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _self_correction(c: _Ctx) -> None:
    rng = c.rng
    kind = rng.randrange(5)
    fix = rng.choice(_FIXES)
    if kind == 0:
        a, b = rng.sample(_SEATS, 2)
        text = f"{rng.choice(('give me', 'I want', 'book me'))} the {a} row, {fix} the {b} row"
    elif kind == 1:
        a, b = rng.sample(_NUMBERS, 2)
        text = f"{rng.choice(('reserve a table for', 'we are', 'tickets for'))} {a}, {fix} {b}"
    elif kind == 2:
        word, sym = rng.choice(phrasing.OPERATORS[:4])  # no division: the corrected operand could be 0
        x, y, z = rng.randint(2, 60), rng.randint(2, 30), rng.randint(2, 30)
        text = f"{rng.choice(('what is', 'how much is', 'work out'))} {x} {word} {y}, {fix} {x} {word} {z}"
        c.tool("calculate", 50.0, {"+": x + z, "-": x - z, "*": x * z}[sym], None)
    elif kind == 3:
        a, b = rng.sample(_COFFEES, 2)
        text = f"{rng.choice(('I will have', 'make it', 'get me'))} {_an(a)} coffee, {fix} {_an(b)} coffee"
    else:
        a, b = rng.sample(_DAYS, 2)
        text = f"{rng.choice(('move it to', 'post it on', 'call me on'))} {a}, {fix} {b}"
    c.say(text, busy=5.0, **c.start())


def _pause(c: _Ctx, filled: bool) -> None:
    if filled:
        first, second = c.rng.choice(_FILLED), c.rng.choice(_CONTINUATIONS)
    else:
        first, second = c.rng.choice(_SILENT)
    eid = c.new_id()
    c.b.say(first, role="partial", wpm=c._jitter(), id=eid, **c.start())  # type: ignore[arg-type]
    pause = round(c.rng.uniform(0.6, 2.6), 2)  # below the 3 s at which the dialog state yields
    c.b.pause(pause)
    c.t += c.speech_seconds(first) + pause
    c.say(second, busy=4.5)  # follows the pause


def _backchannel(c: _Ctx) -> None:
    # A long answer to talk "mm-hm" over: a delegated question, or a greeting's reply.
    if c.rng.random() < 0.6:
        q = _question(c)
        span = c.busy
    else:
        text, words = _opener(c)
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
        text, words = _opener(c)
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
    text, words = _opener(c)
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
    c.say(rng.choice(_TRANSLATE).format(language=language),
          busy=c.reply(f"Okay, I will translate what you say into {language}."), **c.start())
    for phrase in rng.sample(_PHRASES, rng.randint(1, 2)):
        c.say(phrase, busy=1.5, **c.start())
    c.say(rng.choice(_STOP), busy=c.reply("Okay, I stopped translating."), **c.start())


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
    phrasings: str = "train",
) -> GeneratedDialog:
    """The dialog of ``seed``: ``turns`` (min, max) segments drawn from :data:`CATEGORIES` (or exactly
    ``categories``), in text mode with probability ``text_fraction``, else espeak-ng speech; user lines come from the
    ``phrasings`` split of :mod:`microturn.training.phrasing`."""
    if phrasings not in phrasing.PHRASINGS:
        raise ValueError(f"phrasings must be one of {', '.join(phrasing.PHRASINGS)}, got {phrasings!r}")
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
    c = _Ctx(b, rng, mode, wpm, builtin, phrasings)
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
    """Dialogs ``start`` .. ``start + count - 1`` of the corpus ``seed`` (train or held-out split). A held-out
    corpus uses held-out phrasings unless ``phrasings="train"`` asks for held-out dialogs with train phrasings."""
    split = "heldout" if heldout else "train"
    options.setdefault("phrasings", split)
    for index in range(start, start + count):
        s = dialog_seed(seed, index, heldout=heldout)
        yield make_dialog(s, index=index, name=f"{split}-{seed}-{index:06d}", **options)  # type: ignore[arg-type]
