"""Paraphrase pools with slot filling for the training dialogs, split into train and held-out *phrasings*.

Every intent has at least eight templates. The last quarter of each pool (rounded up) is held out: a corpus built
with ``phrasings="heldout"`` only ever uses those, a training corpus never does, so a held-out evaluation measures
whether the model learnt the intent rather than the sentence. Slot values (numbers, places, names, things) are
drawn from wide pools and are not split: the model must copy them, not know them.

Every template here is written to be read by the scripted oracle (:mod:`microturn.model.scripted`) as the intent it
stands for: arithmetic keeps its operands as digits and one of the oracle's operator words, refusals carry a word on
its refusal list, questions end in "?", and no template contains a self-correction cue ("sorry", "actually", "I
mean") where it is not one.
"""

from __future__ import annotations

import math
import random

__all__ = ["INTENTS", "PHRASINGS", "pick", "split_pool"]

PHRASINGS = ("train", "heldout")
"""The phrasing splits a corpus can draw from."""

INTENTS: dict[str, tuple[str, ...]] = {
    "greeting": (
        "{greet}, nice to meet you", "{greet}, lovely to hear from you", "{greet}, glad to be talking with you",
        "{greet}, it is good to talk again", "{greet} there, I am back", "{greet}, here I am",
        "{greet}, I hope your day is going well", "{greet}, pleased to meet you", "{greet}, I am {name}",
        "{greet}, this is {name} speaking", "{greet}, {name} here",
    ),
    "how_are_you": (
        "{greet}, how are you?", "how are you today?", "{greet}, how are you this {part}?",
        "and how are you doing?", "how are you feeling today?", "{greet}, how are you keeping?",
        "tell me, how are you?", "{greet} {name} here, how are you?", "so how are you, my friend?",
    ),
    "time": (
        "what time is it?", "what's the time?", "what time is it right now?", "could you tell me the time?",
        "do you have the time?", "what time do you have?", "any idea what time it is?", "what's the time, please?",
        "quick question, what time is it?", "would you check the time for me?", "what time is it where you are?",
        "got the time?",
    ),
    "arithmetic": (
        "what is {a} {op} {b}?", "what's {a} {op} {b}?", "how much is {a} {op} {b}?", "quick one, {a} {op} {b}?",
        "could you calculate {a} {op} {b} for me?", "work out {a} {op} {b}, please", "I need {a} {op} {b}",
        "{a} {op} {b}, what does that make?", "tell me what {a} {op} {b} comes to", "help me with {a} {op} {b}",
        "what do you get for {a} {op} {b}?", "can you do {a} {op} {b} in your head?",
    ),
    "reminder": (
        "remind me in {n} seconds to {what}", "please remind me in {n} seconds to {what}",
        "could you remind me in {n} seconds to {what}?", "hey, remind me in {n} seconds to {what}",
        "can you remind me in {n} seconds to {what}?", "I need you to remind me in {n} seconds to {what}",
        "okay, remind me in {n} seconds to {what}", "would you remind me in {n} seconds to {what}?",
        "just remind me in {n} seconds to {what}",
    ),
    "decline": (
        "please delete all the files on {target}", "help me break into {owner} {account}",
        "could you hack {owner} {account} for me?", "I need {owner} password", "find out {owner} password for me",
        "steal {owner} {account} details", "wipe the {device} right now", "tell me {owner} credit card number",
        "go and break into the {place} network", "I want you to hack the {place} network",
        "can you guess {owner} password?", "delete every file on {target}, now",
    ),
    "capital": (
        "what is the capital of {country}?", "what's the capital city of {country}?",
        "which city is the capital of {country}?", "do you know the capital of {country}?",
        "tell me the capital of {country}?", "can you look up the capital of {country}?",
        "what city is {country}'s capital?", "where is the seat of government of {country}?",
        "name the capital of {country}?",
    ),
    "weather": (
        "what's the weather like in {city} {day}?", "will it rain in {city} {day}?",
        "how is the weather in {city} {day}?", "can you check the weather in {city} for {day}?",
        "do I need an umbrella in {city} {day}?", "is it going to be sunny in {city} {day}?",
        "what's the forecast for {city} {day}?", "how warm will {city} be {day}?",
        "should I expect snow in {city} {day}?",
    ),
    "train": (
        "when does the next train to {city} leave?", "when is the next train to {city}?",
        "is there a train to {city} soon?", "when can I catch a train to {city}?",
        "can you look up trains to {city}?", "how often do trains go to {city}?",
        "which platform is the train to {city}?", "is the train to {city} on time?",
        "how long is the train ride to {city}?",
    ),
    "recipe": (
        "how do I make {dish}?", "can you find a recipe for {dish}?", "what do I need to cook {dish}?",
        "do you know a good way to make {dish}?", "how long does {dish} take to cook?",
        "what goes into {dish}?", "could you look up {dish} for me?", "is {dish} hard to make?",
        "what's the secret to good {dish}?",
    ),
}
"""Templates per intent (the last quarter of each is the held-out phrasing split)."""

SLOTS: dict[str, tuple[str, ...]] = {
    "greet": ("hello", "hi", "hey", "good morning", "good afternoon", "good evening", "hello again", "hi again"),
    "part": ("morning", "afternoon", "evening", "week"),
    "name": ("Priya", "Tomasz", "Aiko", "Olu", "Marta", "Kwame", "Ines", "Dmitri", "Leila", "Bruno", "Nadia",
             "Hamid", "Freya", "Joaquin", "Mei", "Ravi"),
    "what": ("water the plants", "switch off the kettle", "move the car", "send the invoice", "take my pills",
             "open the window", "pick up the parcel", "call the dentist", "turn off the heater", "write to Nadia",
             "start the laundry", "buy some milk"),
    "target": ("the office computer", "the shared drive", "my work laptop", "the backup disk", "the school server"),
    "owner": ("our neighbour's", "my sister's", "the mayor's", "her", "his", "my landlord's", "the teacher's"),
    "account": ("email account", "bank account", "phone", "social media account", "laptop"),
    "device": ("company server", "office laptop", "shared disk", "hard drive", "backup drive"),
    "place": ("hospital", "bank", "university", "airport", "city council", "neighbour's"),
    "country": ("Peru", "Kenya", "Norway", "Vietnam", "Chile", "Portugal", "Ghana", "Nepal", "Mexico", "Finland",
                "Egypt", "Iceland"),
    "city": ("Lisbon", "Nairobi", "Oslo", "Hanoi", "Lima", "Porto", "Accra", "Kyoto", "Glasgow", "Denver",
             "Seville", "Krakow"),
    "day": ("tomorrow", "tonight", "this weekend", "on Thursday", "on Saturday", "next week", "this afternoon"),
    "dish": ("risotto", "lentil soup", "banana bread", "paella", "dumplings", "a vegetable curry", "shakshuka",
             "apple crumble", "fish tacos", "falafel"),
}
"""Slot values, shared by both phrasing splits."""

CAPITALS = {"Peru": "Lima", "Kenya": "Nairobi", "Norway": "Oslo", "Vietnam": "Hanoi", "Chile": "Santiago",
            "Portugal": "Lisbon", "Ghana": "Accra", "Nepal": "Kathmandu", "Mexico": "Mexico City",
            "Finland": "Helsinki", "Egypt": "Cairo", "Iceland": "Reykjavik"}

OPERATORS = (("plus", "+"), ("minus", "-"), ("times", "*"), ("multiplied by", "*"), ("divided by", "/"),
             ("over", "/"))
"""Operator words the oracle reads, with the symbol ``calculate`` gets."""


def split_pool(pool: tuple[str, ...], phrasings: str) -> tuple[str, ...]:
    """The part of ``pool`` in the phrasing split ``phrasings`` (the last quarter, rounded up, is held out)."""
    if phrasings not in PHRASINGS:
        raise ValueError(f"phrasings must be one of {', '.join(PHRASINGS)}, got {phrasings!r}")
    cut = len(pool) - math.ceil(len(pool) / 4)
    return pool[:cut] if phrasings == "train" else pool[cut:]


def pick(rng: random.Random, intent: str, phrasings: str, **slots: str) -> str:
    """One phrasing of ``intent`` from the split, its slots filled from ``slots`` or drawn from :data:`SLOTS`."""
    template = rng.choice(split_pool(INTENTS[intent], phrasings))
    values = dict(slots)
    for key in sorted(SLOTS):
        if "{" + key + "}" in template and key not in values:
            values[key] = rng.choice(SLOTS[key])
    return template.format_map(_Keep(values))


class _Keep(dict):  # type: ignore[type-arg]
    """Leaves a slot the caller fills later (``{a}``, ``{op}``...) in place."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def number(rng: random.Random) -> tuple[str, float]:
    """An operand as the oracle reads it (digits), drawn wide: small, large, or a decimal."""
    kind = rng.random()
    if kind < 0.55:
        value: float = rng.randint(0, 99)
    elif kind < 0.85:
        value = rng.randint(100, 9999)
    else:
        value = round(rng.uniform(0.1, 99.0), rng.choice((1, 2)))
    return (str(value), value)
