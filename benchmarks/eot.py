"""End of turn: microturn's cues (words, prosody, recognized words) and pipecat's smart-turn v3.2, side by side
on one end-of-turn set of our own.

The set is built at start, deterministically (seed 16): sentences from templates written here (not scenario
text), spoken by espeak-ng in voices en-us, en-gb, en-us+f1, en-gb+m3 at 140-200 wpm. Each complete sentence is
one "end of turn" item; "not an end of turn" items come two ways: a fragment synthesised alone (it ends on to /
for / the / and ...), and the complete sentence's audio cut mid-sentence (at the length espeak gives its first
words alone; the transcript of a cut is those words).

Every item is fed to microturn's DialogStateMachine in 200 ms ticks (the speech-end offset inside the last tick
from ``prosody.speech_end``, the prosody from ``prosody.final_cue``), followed by silence. The machine "takes the
turn" when the user becomes ``yielding`` or ``inviting``; an item is judged an end of turn when that happens within
HORIZON_S of the end of speech (between the plain 0.4 s and the continuing 1.0 s timings; thinking waits 3 s).
Three ways: the exact words (no punctuation, as a recognizer gives them), audio only (prosody + silence), and
pocketsphinx's recognized words. smart-turn scores the same audio plus 200 ms of silence (what pipecat hands it
after its VAD stops) in a subprocess of the pipecat venv; probability > 0.5 is an end of turn.

    python benchmarks/eot.py [--quick] [--pipecat-python /work/bench-venv/bin/python]

Last line, one JSON object: accuracy_transcript, accuracy_prosody, accuracy_recognized, smart_turn_accuracy,
speech_end_error_ms_median, take_turn_ms_median, recognizer_rtf, items; a figure whose part is missing is null,
with the reason under "missing".
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

try:
    import microturn  # noqa: F401
except ImportError:  # running from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from microturn.actors.dialog_state import DialogStateMachine
from microturn.audio.prosody import final_cue, speech_end
from microturn.audio.synth import espeak_available, synthesize
from microturn.extras import MissingExtra

RATE = 16000
TICK = 3200  # 200 ms at 16 kHz
HORIZON_S = 0.8
SILENCE_S = 3.6  # long enough for the longest (thinking) timing to run out
SEED = 16
VOICES = ("en-us", "en-gb", "en-us+f1", "en-gb+m3")
DEFAULT_PIPECAT_PYTHON = "/work/bench-venv/bin/python"

# Our own templates: an opening that ends unfinished (the fragment) and the completions that finish it.
TEMPLATES = {
    "could you book a table for": ("four people tonight", "two of us on friday", "my parents at seven"),
    "i want to send a parcel to": ("my cousin in leeds", "the office by monday", "an old friend abroad"),
    "please remind my sister to": ("water the plants", "feed the cat", "call the dentist", "bring her umbrella"),
    "we should probably paint the": ("garden fence blue", "kitchen this summer", "front door green"),
    "my neighbour asked me about the": ("broken street lamp", "noisy party last night", "parking rules"),
    "i was thinking of buying a": ("second hand bicycle", "bigger tent", "new kettle"),
    "tell the driver that i am": ("running late", "waiting outside", "at the north gate"),
    "the museum opens early and": ("closes before dinner", "stays quiet all morning", "sells cheap tickets"),
    "i forgot where i left my": ("reading glasses", "house keys", "blue notebook", "phone charger"),
    "can you check whether the": ("train leaves at noon", "shop is open today", "parcel has arrived"),
    "she wants to move to": ("a quieter town", "the coast next year", "a flat near work"),
    "let us meet near the": ("old clock tower", "fountain at six", "bakery tomorrow"),
    "he keeps asking for": ("more homework", "a second chance", "the same song"),
    "remember to lock the": ("back door", "bike shed tonight", "windows before leaving"),
}


@dataclass
class Item:
    """One utterance of the set: its audio (PCM16 at 16 kHz, no padding), words, label and kind."""

    kind: str  # complete, fragment, cut
    words: str
    voice: str
    wpm: int
    pcm: np.ndarray
    end_of_turn: bool


def _speak(text: str, voice: str, wpm: int) -> np.ndarray:
    return np.frombuffer(synthesize(text, voice=voice, wpm=wpm), np.int16)


def true_end(pcm: np.ndarray) -> float:
    """Seconds to the last sample of the clean synthesis louder than -60 dBFS (espeak's silence is digital)."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > 32)
    return float(loud[-1] + 1) / RATE if loud.size else 0.0


def build_set(n_sentences: int, rng: random.Random) -> list[Item]:
    """The seeded end-of-turn set: per sentence one complete item, one fragment and one cut."""
    pairs = [(o, c) for o, endings in TEMPLATES.items() for c in endings]
    rng.shuffle(pairs)
    items: list[Item] = []
    for opening, completion in pairs[:n_sentences]:
        voice, wpm = rng.choice(VOICES), rng.randrange(140, 201, 10)
        sentence = f"{opening} {completion}"
        full = _speak(sentence, voice, wpm)
        items.append(Item("complete", sentence, voice, wpm, full, True))
        items.append(Item("fragment", opening, voice, wpm, _speak(opening, voice, wpm), False))
        words = sentence.split()
        k = rng.randrange(2, len(words) - 1)  # at least two words gone, at least two words kept
        prefix = " ".join(words[:k])
        cut = min(round(true_end(_speak(prefix, voice, wpm)) * RATE), full.size - RATE // 10)
        items.append(Item("cut", prefix, voice, wpm, full[:cut].copy(), False))
    return items


def _noisy(pcm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # -66 dBFS of seeded noise, so the silence after speech is not digital zero as a microphone's never is.
    return pcm.astype(np.float64) / 32768.0 + rng.normal(0.0, 5e-4, pcm.size)


def run_machine(x: np.ndarray, text: str, use_prosody: bool) -> tuple[float | None, float | None]:
    """Feed ``x`` (float, starting with speech) plus silence to a fresh DialogStateMachine in ticks. Return the
    measured speech end (s) and the time (s, at a tick's end) the user became yielding/inviting, or None."""
    machine = DialogStateMachine()
    n_speech = -(-x.size // TICK)
    padded = np.concatenate([x, np.zeros(n_speech * TICK - x.size + round(SILENCE_S * RATE))])
    measured = speech_end(x, RATE)
    final = final_cue(x, RATE).final if use_prosody else None
    took = None
    for i in range(padded.size // TICK):
        last = i == n_speech - 1
        offset = None
        if last and measured is not None:
            offset = measured - i * 0.2
        state = machine.step(1.0 if i < n_speech else 0.0, text if last else "", offset, final if last else None)
        if i >= n_speech - 1 and state.user in ("yielding", "inviting") and took is None:
            took = (i + 1) * 0.2
    return measured, took


def smart_turn(python: str, items: list[Item], pcms: list[np.ndarray]) -> tuple[list[float] | None, str | None]:
    """smart-turn v3.2 probabilities for each item from the pipecat venv, or None and why."""
    if not Path(python).exists():
        return None, (f"{python} is missing: make it with `python -m venv /work/bench-venv && "
                      "/work/bench-venv/bin/pip install pipecat-ai==1.14.0 onnxruntime`")
    with tempfile.TemporaryDirectory(prefix="eot-") as tmp:
        paths = []
        for n, x in enumerate(pcms):
            path = str(Path(tmp) / f"{n:03d}.wav")
            with wave.open(path, "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(RATE)
                w.writeframes(np.clip(x * 32768.0, -32768, 32767).astype("<i2").tobytes())
            paths.append(path)
        script = str(Path(__file__).with_name("_smart_turn.py"))
        out = subprocess.run([python, script, *paths], capture_output=True, text=True, timeout=600, check=False)
    if out.returncode != 0:
        return None, f"smart-turn failed in {python}: {out.stderr.strip()[-300:]}"
    return json.loads(out.stdout.strip().splitlines()[-1])["probabilities"], None


def main() -> None:
    """Build the set, score every way, print a table and the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 sentences (12 items) instead of 40 (120 items)")
    parser.add_argument("--pipecat-python", default=DEFAULT_PIPECAT_PYTHON,
                        help="a python with pipecat-ai 1.14.0 and onnxruntime ('none' to skip smart-turn)")
    args = parser.parse_args()
    figures: dict[str, object] = dict.fromkeys(
        ("accuracy_transcript", "accuracy_prosody", "accuracy_recognized", "smart_turn_accuracy",
         "speech_end_error_ms_median", "take_turn_ms_median", "recognizer_rtf"))
    missing: dict[str, str] = {}
    if not espeak_available():
        figures["missing"] = {"all": "espeak-ng is not installed (apt-get install espeak-ng)"}
        print(json.dumps(figures))
        return
    rng = random.Random(SEED)
    items = build_set(4 if args.quick else 40, rng)
    noise = np.random.default_rng(SEED)
    xs = [_noisy(it.pcm, noise) for it in items]
    figures["items"] = len(items)

    recognizer = None
    try:
        from microturn.asr import PocketSphinxRecognizer, recognize

        recognizer = PocketSphinxRecognizer()
    except (MissingExtra, ImportError) as exc:
        missing["accuracy_recognized"] = str(exc)

    ways = {"transcript": [], "prosody": [], "recognized": []}
    end_err, take = [], []
    decode_s = audio_s = 0.0
    print(f"{'kind':9} {'voice':9} wpm  eot  trn pro rec  words / recognized")
    for it, x in zip(items, xs):
        measured, took_t = run_machine(x, it.words, use_prosody=True)
        _, took_p = run_machine(x, "", use_prosody=True)
        truth = true_end(it.pcm)
        if measured is not None and it.kind == "complete":
            end_err.append(abs(measured - truth) * 1000.0)
        if took_t is not None and it.kind == "complete":
            take.append((took_t - truth) * 1000.0)
        said = ""
        took_r = None
        if recognizer is not None:
            padded = np.concatenate([it.pcm, np.zeros(RATE // 2, np.int16)])
            t0 = time.process_time()
            said = " ".join(w.text for w in recognize(padded, RATE, recognizer=recognizer)).lower()
            decode_s += time.process_time() - t0
            audio_s += padded.size / RATE
            _, took_r = run_machine(x, said, use_prosody=True)
        judged = [t is not None and t - truth <= HORIZON_S for t in (took_t, took_p, took_r)]
        for (name, acc), j in zip(ways.items(), judged):
            acc.append(j == it.end_of_turn)
        marks = " ".join("ok " if j == it.end_of_turn else "-- " for j in judged)
        print(f"{it.kind:9} {it.voice:9} {it.wpm}  {int(it.end_of_turn)}    {marks} {it.words!r} / {said!r}")

    figures["accuracy_transcript"] = round(statistics.fmean(ways["transcript"]), 3)
    figures["accuracy_prosody"] = round(statistics.fmean(ways["prosody"]), 3)
    if recognizer is not None:
        figures["accuracy_recognized"] = round(statistics.fmean(ways["recognized"]), 3)
        figures["recognizer_rtf"] = round(decode_s / audio_s, 3)
    figures["speech_end_error_ms_median"] = round(statistics.median(end_err), 1) if end_err else None
    figures["take_turn_ms_median"] = round(statistics.median(take), 1) if take else None

    if args.pipecat_python != "none":
        tail = np.zeros(RATE // 5)
        probs, why = smart_turn(args.pipecat_python, items, [np.concatenate([x, tail]) for x in xs])
        if probs is None:
            missing["smart_turn_accuracy"] = why or "unknown"
        else:
            ways["smart_turn"] = [(p > 0.5) == it.end_of_turn for p, it in zip(probs, items)]
            figures["smart_turn_accuracy"] = round(statistics.fmean(ways["smart_turn"]), 3)
    else:
        missing["smart_turn_accuracy"] = "skipped (--pipecat-python none)"
    # Accuracy per kind of item shows which way says "end of turn" to everything (complete 1.0, the rest 0).
    figures["by_kind"] = {
        name: {kind: round(statistics.fmean(ok for ok, it in zip(acc, items) if it.kind == kind), 3)
               for kind in ("complete", "fragment", "cut")}
        for name, acc in ways.items() if acc
    }
    if missing:
        figures["missing"] = missing
    print("\nfigure                         value")
    for name, value in figures.items():
        if name != "missing":
            print(f"{name:30} {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
