"""Speech recognition: word error rate on espeak-ng speech and the real-time factor on one core.

Held-out sentences (written here, not taken from the corpus templates nor the scenario library) are spoken by
espeak-ng in several voices and rates, with 0.5 s of silence each side as a VAD segment has, and fed to the
pocketsphinx recognizer in 200 ms chunks, exactly as a tick would. The decode time of every chunk is measured
on the calling thread (process time, so another process on the machine does not count).

    python benchmarks/asr.py [--quick]

Prints one line per utterance, then, as its last line, one JSON object:
{"wer_general_lm": ..., "wer_domain_lm": null until the domain LM exists, "rtf": decode time / audio time,
 "chunk_ms_p99": ..., ...}; figures are null (with "missing") where pocketsphinx or espeak-ng is not installed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

try:
    import microturn.asr  # noqa: F401
except ImportError:  # running from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from microturn.audio.synth import espeak_available, synthesize
from microturn.extras import MissingExtra

HELD_OUT = (
    "what is the weather like today",
    "i would like to order a pizza",
    "can you call me a taxi",
    "how long does it take to get there",
    "please turn off the lights in the kitchen",
    "where did i put my keys",
)
VOICES = (("en-us", 175), ("en-gb", 150), ("en-us+f3", 200))
CHUNK = 3200  # 200 ms at 16 kHz


def wer_counts(ref: list[str], hyp: list[str]) -> int:
    """Word edit distance (substitutions + deletions + insertions)."""
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two sentences, two voices")
    args = parser.parse_args()
    sentences, voices = (HELD_OUT[:2], VOICES[:2]) if args.quick else (HELD_OUT, VOICES)
    figures: dict[str, object] = {"wer_general_lm": None, "wer_domain_lm": None, "rtf": None, "chunk_ms_p99": None}
    try:
        from microturn.asr import PocketSphinxRecognizer

        rec = PocketSphinxRecognizer()
    except MissingExtra as exc:
        figures["missing"] = str(exc)
        print(json.dumps(figures))
        return
    if not espeak_available():
        figures["missing"] = "espeak-ng is not installed"
        print(json.dumps(figures))
        return
    errors = words = 0
    decode_s = audio_s = 0.0
    chunk_s: list[float] = []
    pad = np.zeros(8000, np.int16)
    for text in sentences:
        for voice, wpm in voices:
            pcm = np.concatenate([pad, np.frombuffer(synthesize(text, voice=voice, wpm=wpm), np.int16), pad])
            rec.reset()
            for i in range(0, pcm.size, CHUNK):
                t = time.process_time()
                rec.accept(pcm[i : i + CHUNK])
                chunk_s.append(time.process_time() - t)
            t = time.process_time()
            hyp = rec.finish().text
            chunk_s.append(time.process_time() - t)
            decode_s += sum(chunk_s[-(pcm.size // CHUNK + 2) :])
            audio_s += pcm.size / 16000
            ref = text.split()
            e = wer_counts(ref, hyp.split())
            errors += e
            words += len(ref)
            print(f"{voice:9s} {wpm:3d}  wer {e / len(ref):.2f}  {text!r} -> {hyp!r}")
    figures.update(
        wer_general_lm=round(errors / words, 3),
        rtf=round(decode_s / audio_s, 3),
        chunk_ms_p99=round(float(np.percentile(chunk_s, 99)) * 1000, 1),
        chunk_ms_max=round(max(chunk_s) * 1000, 1),
        utterances=len(sentences) * len(voices),
        audio_seconds=round(audio_s, 2),
        domain_lm="not built yet",
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
