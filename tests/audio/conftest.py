"""Fixtures for the audio tests: real speech from espeak-ng (skipped only where espeak-ng is missing)."""

from __future__ import annotations

import numpy as np
import pytest

from microturn.audio import Synthesizer, espeak_available, pcm16_to_float

SENTENCES = (
    ("Hello there, how are you doing today?", "en-us"),
    ("I think we should take the train to the city tomorrow morning.", "en+f3"),
    ("Could you book a table for two at seven?", "en-gb"),
)


@pytest.fixture(scope="session")
def synthesizer(tmp_path_factory: pytest.TempPathFactory) -> Synthesizer:
    """A synthesiser whose cache lives in a per-session temporary directory (never the user's cache)."""
    if not espeak_available():
        pytest.skip("espeak-ng is not installed")
    return Synthesizer(cache_dir=tmp_path_factory.mktemp("tts"))


@pytest.fixture(scope="session")
def utterances(synthesizer: Synthesizer) -> list[np.ndarray]:
    """A few espeak-ng utterances (float32, 16 kHz) from different voices."""
    return [pcm16_to_float(synthesizer.synthesize(text, voice=voice)) for text, voice in SENTENCES]
