"""The perception actor in lockstep sessions: 4 dMel frames per tick, streaming == whole signal bit for bit
(at 16 kHz and through the resampler), text windows, image patches, VAD, and bad input that never stops the
session."""

from __future__ import annotations

import io
import itertools
import sys
from collections.abc import Sequence

import numpy as np
import pytest

from microturn.actors import ClockActor
from microturn.actors.perception import PerceptionActor, patchify
from microturn.audio import (
    EnergyVAD,
    Synthesizer,
    VADUnavailable,
    dmel,
    espeak_available,
    float_to_pcm16,
    noise,
    pcm16_to_float,
    resample,
    silence,
    tone,
)
from microturn.audio.vad import silero_available
from microturn.messages import InputChunk, Message, UserAudio, UserImage, UserText
from microturn.runtime import capture_logs, open_session

TICK = 3200  # samples per 200 ms window at 16 kHz


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """A real espeak-ng utterance, float32 at 16 kHz (skipped only where espeak-ng is missing)."""
    if not espeak_available():
        pytest.skip("espeak-ng is not installed")
    tts = Synthesizer(cache_dir=tmp_path_factory.mktemp("tts"))
    return pcm16_to_float(tts.synthesize("Could you book a table for two at seven?"))


async def _run(
    inputs: Sequence[tuple[float, Message]], ticks: int, perception: PerceptionActor | None = None, body=None
) -> tuple[list[InputChunk], PerceptionActor]:
    """Run a clock and a perception actor for ``ticks`` ticks with scheduled inputs; return the chunks."""
    perception = perception or PerceptionActor()
    seen: list[Message] = []
    async with open_session([ClockActor(), perception], mode="lockstep", taps=[seen.append]) as session:
        for at, message in inputs:
            session.schedule(message, at=at)
        if body is not None:
            await body(session, perception)
        await session.run_ticks(ticks)
    chunks = [m for m in seen if isinstance(m, InputChunk)]
    assert [c.tick for c in chunks] == list(range(len(chunks)))
    return chunks, perception


def _frames(chunks: Sequence[InputChunk]) -> np.ndarray:
    for chunk in chunks:
        assert chunk.n_frames == 4 and len(chunk.dmel) == 4 * 80
    return np.frombuffer(b"".join(c.dmel for c in chunks), np.uint8).reshape(-1, 80)


def _odd_cuts(n: int, seed: int, low: int = 1, high: int = 5000) -> list[tuple[int, int]]:
    """Split [0, n) into consecutive pieces of odd, irregular sizes."""
    rng = np.random.default_rng(seed)
    bounds = [0]
    while bounds[-1] < n:
        bounds.append(min(n, bounds[-1] + (int(rng.integers(low, high)) | 1)))
    return list(itertools.pairwise(bounds))


async def test_every_tick_publishes_exactly_four_frames(autojump_clock) -> None:
    short = float_to_pcm16(tone(440, 0.05))  # far less than a window: the rest is silence
    chunks, perception = await _run([(0.3, UserAudio(pcm=short))], ticks=5)
    assert len(chunks) == 5
    frames = _frames(chunks)
    assert not frames[:4].any() and not frames[8:].any()  # silence is level 0 in every band
    assert frames[4:8].any()
    assert perception.padded_samples == 5 * TICK - 800 and perception.chunks == 5
    assert all(c.text == "" and c.n_patches == 0 and c.patches == b"" for c in chunks)


async def test_16k_stream_in_odd_messages_equals_whole_signal_bit_for_bit(autojump_clock, speech) -> None:
    signal = np.concatenate([silence(0.3), speech, tone(300, 0.4, amplitude=0.3), noise(0.5, 0.02)])
    pcm = float_to_pcm16(signal)
    signal = pcm16_to_float(pcm)  # what the transport really carries
    # Each message is delivered when its first sample is due, so a window's audio is always there in time.
    inputs = [(a / 16000, UserAudio(pcm=pcm[2 * a : 2 * b])) for a, b in _odd_cuts(signal.size, seed=1)]
    n = signal.size // TICK
    chunks, perception = await _run(inputs, ticks=n)
    np.testing.assert_array_equal(_frames(chunks), dmel(signal)[: 4 * n])
    assert perception.padded_samples == 0 and perception.rejected == 0


async def test_44k1_stereo_stream_equals_whole_resampled_signal_bit_for_bit(autojump_clock, speech) -> None:
    left = resample(np.concatenate([speech, silence(0.2)]), 16000, 44100)
    right = tone(523.25, left.size / 44100, amplitude=0.2, sample_rate=44100)
    pcm = float_to_pcm16(np.stack([left, right], axis=1).ravel())
    whole = resample(pcm16_to_float(pcm, channels=2), 44100)  # mix down, then resample the whole signal
    # Odd-sized stereo messages (whole frames), delivered one tick ahead of when they are due.
    inputs = [
        (max(0.0, a / 44100 - 0.2), UserAudio(pcm=pcm[4 * a : 4 * b], sample_rate=44100, channels=2))
        for a, b in _odd_cuts(left.size, seed=2)
    ]
    n = whole.size // TICK - 1  # the resampler holds back its filter delay at the very end
    chunks, perception = await _run(inputs, ticks=n)
    np.testing.assert_array_equal(_frames(chunks), dmel(whole)[: 4 * n])
    assert perception.padded_samples == 0


async def test_audio_in_real_time_settles_into_a_small_fixed_latency(autojump_clock, speech) -> None:
    x = resample(speech, 16000, 48000)
    pcm = float_to_pcm16(x)
    # Each 20 ms frame arrives when its last sample has been recorded (a live transport).
    inputs = [
        ((a + 960) / 48000, UserAudio(pcm=pcm[2 * a : 2 * a + 1920], sample_rate=48000))
        for a in range(0, x.size - 959, 960)
    ]
    padded = []

    async def watch(session, perception):
        for _ in range(x.size // 9600 - 1):  # stop before the audio runs out
            await session.run_ticks(1)
            padded.append(perception.padded_samples)

    await _run(inputs, ticks=1, body=watch)
    # Silence fills in only while the buffer finds its depth (the resampler's delay and burst size), then never.
    assert 0 < padded[-1] < TICK // 2
    assert len(padded) >= 10 and padded[5:] == [padded[-1]] * (len(padded) - 5)


async def test_a_rate_change_flushes_the_old_resampler_first(autojump_clock, speech) -> None:
    first = float_to_pcm16(resample(speech[:8000], 16000, 48000))
    second = float_to_pcm16(speech[8000:])
    expected = np.concatenate([resample(pcm16_to_float(first), 48000), pcm16_to_float(second)])
    n = expected.size // TICK
    chunks, _ = await _run([(0.0, UserAudio(pcm=first, sample_rate=48000)), (0.0, UserAudio(pcm=second))], ticks=n)
    np.testing.assert_array_equal(_frames(chunks), dmel(expected)[: 4 * n])


async def test_text_is_grouped_by_the_window_it_arrived_in(autojump_clock) -> None:
    inputs = [
        (0.05, UserText(text="hello ")),
        (0.15, UserText(text="world")),
        (0.2, UserText(text="at the edge")),
        (0.65, UserText(text="again")),
        (0.7, UserText(text="and")),  # two pieces without spaces: joined as two words, never glued
    ]
    chunks, _ = await _run(inputs, ticks=4)
    assert [c.text for c in chunks] == ["hello world", "at the edge", "", "again and"]


def _gradient(width: int, height: int) -> np.ndarray:
    """An RGB image whose red channel is the column and green the row (mod 256), blue a constant."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x % 256, y % 256, np.full_like(x, 7)], axis=-1).astype(np.uint8)


def _patches(chunk: InputChunk) -> np.ndarray:
    return np.frombuffer(chunk.patches, np.uint8).reshape(chunk.n_patches, 40, 40, 3)


async def test_image_patches_are_padded_and_row_major(autojump_clock) -> None:
    img = _gradient(100, 50)  # 3 patches across, 2 down, padded to 120 x 80
    tiny = _gradient(1, 1)
    inputs = [
        (0.1, UserImage(data=img.tobytes(), width=100, height=50)),
        (0.1, UserImage(data=tiny.tobytes(), width=1, height=1)),
    ]
    chunks, _ = await _run(inputs, ticks=2)
    assert chunks[0].n_patches == 7 and chunks[1].n_patches == 0
    assert chunks[0].image_grids == [(2, 3), (1, 1)]  # (patch rows, patch columns) per image, in order
    patches = _patches(chunks[0])
    padded = np.zeros((80, 120, 3), np.uint8)
    padded[:50, :100] = img
    for p in range(6):
        row, col = divmod(p, 3)
        np.testing.assert_array_equal(patches[p], padded[40 * row : 40 * row + 40, 40 * col : 40 * col + 40])
    assert tuple(patches[2][0, 19]) == (99, 0, 7) and not patches[2][0, 20].any()  # right edge: real, then pad
    assert tuple(patches[4][9, 0]) == (40, 49, 7) and not patches[4][10].any()  # bottom edge
    assert tuple(patches[6][0, 0]) == (0, 0, 7) and not patches[6][0, 1].any()  # the 1x1 image, padded
    np.testing.assert_array_equal(patchify(img), patches[:6])


async def test_images_beyond_the_per_tick_cap_wait_or_are_refused(autojump_clock) -> None:
    six = _gradient(120, 80).tobytes()
    inputs = [
        (0.1, UserImage(data=six, width=120, height=80)),
        (0.1, UserImage(data=six, width=120, height=80)),
        (0.1, UserImage(data=_gradient(121, 80).tobytes(), width=121, height=80)),
    ]
    with capture_logs() as logs:  # actors bind their logger when built: build them inside the capture
        chunks, perception = await _run(inputs, ticks=3, perception=PerceptionActor(max_patches_per_tick=6))
    assert [c.n_patches for c in chunks] == [6, 6, 0]  # whole images only, the second one a tick later
    assert perception.rejected == 1
    (warning,) = [e for e in logs if e["event"] == "input_rejected"]
    assert warning["field"] == "width x height" and warning["value"] == "121x80" and "8 patches" in warning["problem"]


@pytest.fixture
def pil_image():
    """Pillow's Image module (skipped where Pillow, an optional dependency, is not installed)."""
    return pytest.importorskip("PIL.Image", reason="Pillow (optional) is not installed")


async def test_png_and_jpeg_decode_through_pillow(autojump_clock, pil_image) -> None:
    img = _gradient(50, 45)
    encoded = {}
    for fmt in ("png", "jpeg"):
        buf = io.BytesIO()
        pil_image.fromarray(img).save(buf, format=fmt.upper())
        encoded[fmt] = buf.getvalue()
    inputs = [
        (0.1, UserImage(data=encoded["png"], format="png")),
        (0.3, UserImage(data=encoded["jpeg"], format="jpeg")),
        (0.5, UserImage(data=encoded["png"], format="jpeg")),
        (0.5, UserImage(data=b"not an image", format="png")),
    ]
    chunks, perception = await _run(inputs, ticks=3)
    np.testing.assert_array_equal(_patches(chunks[0]), patchify(img))  # PNG is lossless
    assert chunks[1].n_patches == 4
    assert chunks[2].n_patches == 0 and perception.rejected == 2


async def test_png_without_pillow_says_to_install_it(autojump_clock, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "PIL", None)  # makes `from PIL import Image` raise ImportError
    with capture_logs() as logs:
        chunks, perception = await _run([(0.1, UserImage(data=b"\x89PNG", format="png"))], ticks=2)
    assert perception.rejected == 1 and len(chunks) == 2
    (warning,) = [e for e in logs if e["event"] == "input_rejected"]
    assert warning["field"] == "format" and "pip install 'microturn[images]'" in warning["problem"]


async def test_vad_is_high_on_speech_and_low_on_silence(autojump_clock, speech) -> None:
    pcm = float_to_pcm16(np.concatenate([silence(1.0), speech, silence(1.2)]))
    n = len(pcm) // (2 * TICK)
    chunks, _ = await _run([(0.0, UserAudio(pcm=pcm))], ticks=n + 3)
    probs = np.array([c.speech_prob for c in chunks])
    first, last = 5, 5 + speech.size // TICK  # the ticks the utterance covers
    assert (probs[:4] < 0.1).all() and (probs[last + 2 :] < 0.1).all()
    assert np.mean(probs[first + 1 : last - 1] >= 0.5) >= 0.8


class FixedVAD:
    """A stand-in detector: records the windows it sees and always answers 0.25."""

    def __init__(self) -> None:
        self.windows: list[int] = []

    def reset(self) -> None:
        self.windows.clear()

    def speech_prob(self, samples: np.ndarray) -> float:
        self.windows.append(samples.size)
        return 0.25


async def test_the_detector_is_pluggable(autojump_clock) -> None:
    vad = FixedVAD()
    chunks, _ = await _run([], ticks=3, perception=PerceptionActor(vad=vad))
    assert [c.speech_prob for c in chunks] == [0.25] * 3 and vad.windows == [TICK] * 3
    assert isinstance(PerceptionActor(vad="energy").vad, EnergyVAD)
    with pytest.raises(ValueError, match="'energy', 'silero'"):
        PerceptionActor(vad="webrtc")
    with pytest.raises(TypeError, match="speech_prob"):
        PerceptionActor(vad=object())  # type: ignore[arg-type]
    if not silero_available():
        with pytest.raises(VADUnavailable, match=r"pip install 'microturn\[vad\]'"):
            PerceptionActor(vad="silero")


async def test_bad_input_is_logged_counted_and_the_session_goes_on(autojump_clock) -> None:
    good = pcm16_to_float(float_to_pcm16(noise(0.6, 0.05, seed=3)))
    first, second = float_to_pcm16(good[:4000]), float_to_pcm16(good[4000:])
    bad = [
        UserAudio(pcm=first, sample_rate=12345),
        UserAudio(pcm=b"\x01\x02\x03"),
        UserAudio(pcm=b""),
        UserAudio(pcm=bytes(2 * 16000 * 11)),  # 11 s in one message
        UserAudio(pcm=first, channels=0),
        UserImage(data=b"\x00" * 10, width=2, height=2),
        UserImage(data=b"", width=0, height=3),
    ]
    inputs = [(0.0, UserAudio(pcm=first)), *[(0.0, m) for m in bad], (0.0, UserAudio(pcm=second))]

    async def float_path(session, perception):
        x = tone(440, 0.1)
        x[37] = np.nan
        assert perception.push_samples(x, 16000) is False
        assert perception.push_samples(np.full(10, np.inf, np.float32), 16000) is False

    with capture_logs() as logs:
        chunks, perception = await _run(inputs, ticks=4, body=float_path)
    assert len(chunks) == 4  # every tick still published
    np.testing.assert_array_equal(_frames(chunks)[:12], dmel(good)[:12])  # accepted audio is intact, in order
    warnings = [e for e in logs if e["event"] == "input_rejected"]
    assert perception.rejected == len(warnings) == 9
    assert all(w["log_level"] == "warning" and w["actor"] == "perception" for w in warnings)
    got = [(w["message_type"], w["field"], w["value"]) for w in warnings]
    assert got[0][:2] == got[1][:2] == ("samples", "samples") and "nan at index 37" in got[0][2]  # the float path
    assert got[2:] == [
        ("UserAudio", "sample_rate", "12345"),
        ("UserAudio", "pcm", "3 bytes"),
        ("UserAudio", "pcm", "0 bytes"),
        ("UserAudio", "pcm", "11.000 s"),
        ("UserAudio", "channels", "0"),
        ("UserImage", "data", "10 bytes"),
        ("UserImage", "width x height", "0x3"),
    ]


async def test_the_audio_buffer_is_bounded(autojump_clock) -> None:
    five = float_to_pcm16(noise(5.0, 0.05))
    with capture_logs() as logs:  # actors bind their logger when built: build them inside the capture
        perception = PerceptionActor(max_message_seconds=5.0, max_buffer_seconds=8.0)
        chunks, _ = await _run([(0.0, UserAudio(pcm=five)), (0.0, UserAudio(pcm=five))], ticks=2, perception=perception)
    assert perception.rejected == 1 and len(chunks) == 2
    (warning,) = [e for e in logs if e["event"] == "input_rejected"]
    assert (warning["message_type"], warning["field"], warning["value"]) == ("UserAudio", "pcm", "5.000 s")
    assert "buffer full (5.0 s queued)" in warning["problem"]

