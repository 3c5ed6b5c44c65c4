"""Speech recognition: a small streaming ``SpeechRecognizer`` protocol and a pocketsphinx backend.

``PocketSphinxRecognizer`` (the optional ``asr`` extra: pocketsphinx, whose wheel ships the US-English acoustic
model, dictionary and language model, so nothing is downloaded) decodes incrementally: ``accept`` feeds 16 kHz
audio and returns the partial hypothesis, ``finish`` ends the utterance and returns the final words with start/end
times in seconds from the utterance start, ``reset`` drops the utterance. ``recognize(pcm, rate)`` is the one-call
API for benchmarks.
"""

from microturn.asr.actor import RecognizerActor
from microturn.asr.recognizer import (
    AudioRejected,
    Hypothesis,
    PocketSphinxRecognizer,
    SpeechRecognizer,
    Word,
    check_audio,
    recognize,
)

__all__ = [
    "AudioRejected",
    "Hypothesis",
    "PocketSphinxRecognizer",
    "RecognizerActor",
    "SpeechRecognizer",
    "Word",
    "check_audio",
    "recognize",
]
