"""Score WAV files with pipecat's smart-turn v3.2 (the ONNX model shipped inside pipecat-ai); run in a venv that
has pipecat-ai and onnxruntime, never imported by microturn.

    /work/bench-venv/bin/python benchmarks/_smart_turn.py WAV...

Prints one JSON object: {"probabilities": [...], "model": path}; each WAV is 16 kHz mono PCM16, scored as
pipecat's LocalSmartTurnAnalyzerV3 does (its last 8 s, zero-padded at the front, Whisper log-mel features).
"""

import json
import sys
import wave
from importlib import resources

import numpy as np
import onnxruntime as ort
from pipecat.audio.turn.smart_turn._whisper_features import compute_whisper_log_mel_features

RATE = 16000
WINDOW = 8 * RATE


def _read(path: str) -> np.ndarray:
    with wave.open(path, "rb") as w:
        if w.getframerate() != RATE or w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise SystemExit(f"{path}: need 16 kHz mono PCM16")
        pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    return pcm.astype(np.float32) / 32768.0


def main() -> None:
    """Score every WAV path given and print the probabilities as JSON."""
    model = str(resources.files("pipecat.audio.turn.smart_turn.data").joinpath("smart-turn-v3.2-cpu.onnx"))
    so = ort.SessionOptions()
    so.inter_op_num_threads = 1
    so.intra_op_num_threads = 1  # the machine's cores are shared
    session = ort.InferenceSession(model, sess_options=so, providers=["CPUExecutionProvider"])
    probs = []
    for path in sys.argv[1:]:
        x = _read(path)[-WINDOW:]
        x = np.pad(x, (WINDOW - x.size, 0))
        feats = compute_whisper_log_mel_features(x, do_normalize=True)[None]
        probs.append(float(np.asarray(session.run(None, {"input_features": feats})[0]).reshape(-1)[0]))
    print(json.dumps({"probabilities": probs, "model": model}))


if __name__ == "__main__":
    main()
