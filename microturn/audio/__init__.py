"""Audio signal processing shared by perception and output.

PCM16 decoding and resampling to 16 kHz, dMel tokens (docs/design.md §6), voice-activity detection, WAV files,
espeak-ng speech synthesis and deterministic test signals. numpy + soxr only; no torch.
"""

from microturn.audio.dmel import (
    DMEL,
    DMelFrames,
    DMelParams,
    DMelStream,
    dequantize,
    dmel,
    mel_filterbank,
)
from microturn.audio.errors import (
    AudioInputError,
    SynthesisError,
    SynthesisUnavailable,
    VADUnavailable,
    WavFormatError,
)
from microturn.audio.pcm import (
    MAX_MESSAGE_SECONDS,
    SUPPORTED_RATES,
    TARGET_RATE,
    decode_pcm16,
    float_to_pcm16,
    pcm16_to_float,
)
from microturn.audio.resample import StreamResampler, pcm16_to_16k, resample
from microturn.audio.signals import noise, silence, tone
from microturn.audio.synth import Synthesizer, espeak_available, synthesize
from microturn.audio.vad import EnergyVAD, SileroVAD, VoiceActivityDetector
from microturn.audio.wav import WavAudio, read_wav, write_stereo_wav, write_wav

__all__ = [
    "DMEL",
    "MAX_MESSAGE_SECONDS",
    "SUPPORTED_RATES",
    "TARGET_RATE",
    "AudioInputError",
    "DMelFrames",
    "DMelParams",
    "DMelStream",
    "EnergyVAD",
    "SileroVAD",
    "StreamResampler",
    "SynthesisError",
    "SynthesisUnavailable",
    "Synthesizer",
    "VADUnavailable",
    "VoiceActivityDetector",
    "WavAudio",
    "WavFormatError",
    "decode_pcm16",
    "dequantize",
    "dmel",
    "espeak_available",
    "float_to_pcm16",
    "mel_filterbank",
    "noise",
    "pcm16_to_16k",
    "pcm16_to_float",
    "read_wav",
    "resample",
    "silence",
    "synthesize",
    "tone",
    "write_stereo_wav",
    "write_wav",
]
