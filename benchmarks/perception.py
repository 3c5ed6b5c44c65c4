"""Perception cost per 200 ms tick: streaming dMel + the built-in EnergyVAD, on one thread.

Everything here runs on the calling thread: numpy's FFT and elementwise loops are single-threaded, and the
dMel path deliberately makes no BLAS call (see microturn/audio/dmel.py), so no thread pool can help.

Feeds minutes of real-ish audio (espeak-ng speech with pauses over a little background noise; a tone-and-noise
stand-in where espeak-ng is missing) tick by tick, exactly as the perception actor would, and times each tick.

    python benchmarks/perception.py [--seconds 300]

Prints a short table, then, as its last line, one JSON object:
{"realtime_factor": processing time / audio duration, "ms_per_chunk": ..., "chunk_ms": 200, ...}
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import structlog

try:
    import microturn.audio  # noqa: F401
except ImportError:  # running from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from microturn.audio import (
    DMelStream,
    EnergyVAD,
    Synthesizer,
    espeak_available,
    noise,
    pcm16_to_float,
    silence,
    tone,
)

TICK = 3200  # 200 ms at 16 kHz
SENTENCES = [
    "Hello there, how are you doing today?",
    "I think we should take the train to the city tomorrow morning.",
    "Could you book a table for two at seven, please?",
    "Actually, wait, let me check my calendar first.",
    "The weather looks good for the weekend, so maybe we can go hiking.",
]


def make_audio(seconds: float) -> tuple[np.ndarray, str]:
    """About ``seconds`` of 16 kHz float audio and a word describing where it came from."""
    if espeak_available():
        with tempfile.TemporaryDirectory() as cache:
            synth = Synthesizer(cache_dir=cache)
            voices = ["en-us", "en+f3", "en-gb"]
            clips = [
                pcm16_to_float(synth.synthesize(text, voice=voice)) for voice in voices for text in SENTENCES
            ]
        source = "espeak-ng speech"
    else:
        clips = [tone(f, 1.5, amplitude=0.3) * np.hanning(24000).astype(np.float32) for f in (180, 220, 260)]
        source = "tone + noise (espeak-ng missing)"
    parts, total, i = [], 0, 0
    while total < seconds * 16000:
        clip = clips[i % len(clips)]
        gap = silence(0.4 + 0.2 * (i % 4))
        parts += [clip, gap]
        total += clip.size + gap.size
        i += 1
    x = np.concatenate(parts)[: int(seconds * 16000)]
    x = x + noise(x.size / 16000, 0.002, seed=0)
    return np.clip(x, -1.0, 1.0 - 2**-15).astype(np.float32), source


def time_ticks(ticks: list[np.ndarray], step) -> np.ndarray:
    """Seconds spent in ``step(tick)`` for each tick."""
    out = np.empty(len(ticks))
    clock = time.perf_counter
    for i, t in enumerate(ticks):
        start = clock()
        step(t)
        out[i] = clock() - start
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="audio to process (default 300 s)")
    args = parser.parse_args()
    # Keep the synthesiser's debug lines out of the table (and off the JSON last line).
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))

    audio, source = make_audio(args.seconds)
    ticks = [audio[i : i + TICK] for i in range(0, audio.size - TICK + 1, TICK)]

    def separate():
        stream, vad = DMelStream(), EnergyVAD()
        return lambda t: (stream.push(t), vad.speech_prob(t))

    def shared():
        stream, vad = DMelStream(), EnergyVAD()

        def step(t: np.ndarray) -> None:
            frames = stream.push_frames(t)
            vad.speech_prob_from_magnitudes(frames.magnitudes)

        return step

    def dmel_only():
        return DMelStream().push

    def vad_only():
        return EnergyVAD().speech_prob

    runs = {}
    for name, make in [
        ("dMel + VAD (separate)", separate),
        ("dMel + VAD (shared spectra)", shared),
        ("dMel alone", dmel_only),
        ("EnergyVAD alone", vad_only),
    ]:
        time_ticks(ticks[:50], make())  # warm caches (filterbank, FFT plans) outside the measurement
        runs[name] = time_ticks(ticks, make())

    chunk_s = TICK / 16000
    print(f"perception cost per 200 ms tick: {len(ticks)} ticks ({len(ticks) * chunk_s:.0f} s of {source}), 1 thread")
    print(f"{'path':<30}{'mean ms':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'RTF':>10}")
    for name, secs in runs.items():
        ms = secs * 1e3
        print(
            f"{name:<30}{ms.mean():>9.3f}{np.percentile(ms, 50):>9.3f}{np.percentile(ms, 99):>9.3f}"
            f"{ms.max():>9.3f}{secs.mean() / chunk_s:>10.5f}"
        )
    head = runs["dMel + VAD (separate)"]
    result = {
        "realtime_factor": round(float(head.sum() / (len(ticks) * chunk_s)), 6),
        "ms_per_chunk": round(float(head.mean() * 1e3), 4),
        "p99_ms_per_chunk": round(float(np.percentile(head, 99) * 1e3), 4),
        "shared_spectra_ms_per_chunk": round(float(runs["dMel + VAD (shared spectra)"].mean() * 1e3), 4),
        "chunk_ms": 200,
        "chunks": len(ticks),
        "audio": source,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
