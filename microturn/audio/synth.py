"""Speech synthesis with espeak-ng, cached on disk.

espeak-ng is a Debian package, not a Python one, so it is found on PATH at run time; without it, synthesis
raises SynthesisUnavailable and the rest of the package still works. Output is PCM16 mono at 16 kHz.

The cache key is (text, voice, words per minute, espeak-ng version): the same request on the same espeak build
gives the same audio, so scenarios replay without re-running the synthesiser. Cache files are WAV, so a person
can listen to them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import wave
from functools import lru_cache
from pathlib import Path

import numpy as np
from microturn.log import get_logger

from microturn.audio.errors import (
    AudioInputError,
    SynthesisError,
    SynthesisUnavailable,
    WavFormatError,
)
from microturn.audio.pcm import (
    SUPPORTED_RATES,
    TARGET_RATE,
    float_to_pcm16,
    pcm16_to_float,
)
from microturn.audio.resample import resample
from microturn.audio.wav import read_wav, write_wav

__all__ = ["Synthesizer", "default_cache_dir", "espeak_available", "espeak_version", "synthesize"]

log = get_logger("microturn.audio.synth")

#: Bump when the cached representation changes, so old files are not misread.
_CACHE_FORMAT = 1
_MIN_WPM, _MAX_WPM = 80, 450
_TIMEOUT_S = 120.0


def default_cache_dir() -> Path:
    """``$MICROTURN_CACHE/tts`` if set, else ``$XDG_CACHE_HOME/microturn/tts`` (default ``~/.cache``)."""
    root = os.environ.get("MICROTURN_CACHE")
    if root:
        return Path(root).expanduser() / "tts"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "microturn" / "tts"


def espeak_available(executable: str = "espeak-ng") -> bool:
    """Whether the espeak-ng executable can be found."""
    return shutil.which(executable) is not None


def _resolve(executable: str) -> str:
    path = shutil.which(executable)
    if path is None:
        raise SynthesisUnavailable(
            f"{executable!r} not found on PATH; install espeak-ng (e.g. `apt-get install espeak-ng`)"
        )
    return path


@lru_cache(maxsize=4)
def espeak_version(executable: str = "espeak-ng") -> str:
    """The espeak-ng version string (e.g. ``"1.51"``); raises SynthesisUnavailable if it is not installed."""
    path = _resolve(executable)
    try:
        out = subprocess.run([path, "--version"], capture_output=True, timeout=_TIMEOUT_S, check=False)
    except OSError as exc:
        raise SynthesisUnavailable(f"cannot run {path}: {exc}") from exc
    text = out.stdout.decode("utf-8", "replace")
    match = re.search(r"text-to-speech:\s*(\S+)", text)
    # The data path in the same line is install-specific and would make caches needlessly unshareable.
    return match.group(1) if match else text.strip()


class Synthesizer:
    """espeak-ng text-to-speech with an on-disk cache; ``runs`` counts espeak-ng processes started."""

    def __init__(
        self,
        voice: str = "en-us",
        wpm: int = 175,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        use_cache: bool = True,
        executable: str = "espeak-ng",
    ) -> None:
        self.voice = _check_voice(voice)
        self.wpm = _check_wpm(wpm)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.use_cache = use_cache
        self.executable = executable
        self.runs = 0

    @property
    def version(self) -> str:
        """The espeak-ng version that keys the cache."""
        return espeak_version(self.executable)

    def cache_path(self, text: str, voice: str | None = None, wpm: int | None = None) -> Path:
        """Where the audio for this request is (or would be) cached."""
        key = json.dumps(
            [_CACHE_FORMAT, text, voice or self.voice, wpm or self.wpm, self.version, TARGET_RATE],
            ensure_ascii=False,
        )
        return self.cache_dir / f"{hashlib.sha256(key.encode('utf-8')).hexdigest()}.wav"

    def synthesize(self, text: str, voice: str | None = None, wpm: int | None = None) -> bytes:
        """Speak ``text``; return PCM16 little-endian mono at 16 kHz."""
        text = _check_text(text)
        voice = _check_voice(voice) if voice is not None else self.voice
        wpm = _check_wpm(wpm) if wpm is not None else self.wpm
        path = self.cache_path(text, voice, wpm) if self.use_cache else None
        if path is not None and path.exists():
            try:
                cached = read_wav(path)
                if cached.sample_rate == TARGET_RATE and cached.channels == 1:
                    return cached.pcm
            except WavFormatError:
                pass
            log.warning("tts_cache_unreadable", path=str(path))
        pcm = self._run(text, voice, wpm)
        if path is not None:
            _store(path, pcm)
        return pcm

    def synthesize_float(self, text: str, voice: str | None = None, wpm: int | None = None) -> np.ndarray:
        """Like ``synthesize`` but returns float32 samples in [-1, 1)."""
        return pcm16_to_float(self.synthesize(text, voice, wpm))

    def _run(self, text: str, voice: str, wpm: int) -> bytes:
        path = _resolve(self.executable)
        # Text goes through stdin (-b 1: UTF-8) so text that starts with '-' is never read as an option.
        cmd = [path, "--stdout", "-b", "1", "-v", voice, "-s", str(wpm)]
        self.runs += 1
        log.debug("tts_synthesize", voice=voice, wpm=wpm, chars=len(text))
        try:
            out = subprocess.run(cmd, input=text.encode("utf-8"), capture_output=True, timeout=_TIMEOUT_S, check=False)
        except OSError as exc:
            raise SynthesisUnavailable(f"cannot run {path}: {exc}") from exc
        except subprocess.TimeoutExpired as exc:
            raise SynthesisError(f"espeak-ng took longer than {_TIMEOUT_S:g} s (voice={voice!r})") from exc
        stderr = out.stderr.decode("utf-8", "replace").strip()
        if out.returncode != 0 or not out.stdout:
            raise SynthesisError(f"espeak-ng failed (exit {out.returncode}, voice={voice!r}, wpm={wpm}): {stderr}")
        return _wav_stdout_to_16k(out.stdout)


def _wav_stdout_to_16k(data: bytes) -> bytes:
    # espeak-ng writes a streaming WAV header whose sizes are placeholders; `wave` reads up to the real end.
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise SynthesisError(f"espeak-ng produced unreadable WAV output: {exc}") from exc
    if width != 2 or rate not in SUPPORTED_RATES:
        raise SynthesisError(f"espeak-ng produced {8 * width}-bit audio at {rate} Hz; expected PCM16 at a common rate")
    raw = raw[: len(raw) - len(raw) % (2 * channels)]
    return float_to_pcm16(resample(pcm16_to_float(raw, channels), rate))


def _store(path: Path, pcm: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename: two processes filling the same entry never leave a half-written file behind.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".wav")
    os.close(fd)
    try:
        write_wav(tmp, pcm, TARGET_RATE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_text(text: object) -> str:
    if not isinstance(text, str) or not text.strip():
        raise AudioInputError("text", text, "need a non-empty string to synthesise")
    return text


def _check_voice(voice: object) -> str:
    if not isinstance(voice, str) or not re.fullmatch(r"[A-Za-z0-9_+\-/.]+", voice):
        raise AudioInputError("voice", voice, "need an espeak-ng voice name such as 'en-us' or 'en+f3'")
    return voice


def _check_wpm(wpm: object) -> int:
    if isinstance(wpm, bool) or not isinstance(wpm, (int, np.integer)) or not _MIN_WPM <= int(wpm) <= _MAX_WPM:
        raise AudioInputError("wpm", wpm, f"words per minute must be an int from {_MIN_WPM} to {_MAX_WPM}")
    return int(wpm)


@lru_cache(maxsize=4)
def _default_synthesizer(cache_dir: Path) -> Synthesizer:
    return Synthesizer(cache_dir=cache_dir)


def synthesize(
    text: str, voice: str = "en-us", wpm: int = 175, *, cache_dir: str | os.PathLike[str] | None = None
) -> bytes:
    """Speak ``text`` with espeak-ng (cached); return PCM16 little-endian mono at 16 kHz."""
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return _default_synthesizer(directory).synthesize(text, voice, wpm)
