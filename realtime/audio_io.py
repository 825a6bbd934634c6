"""Audio in: decode files and convert live chunks to the 16 kHz mono float32 the mel expects.

Every way speech enters the server (a WebRTC Opus track at 48 kHz stereo, a pushed WAV/MP3, a
local microphone) goes through :class:`Resampler`, and :func:`load_audio` / :func:`resample` are
that same streaming path run over a whole signal, so offline rendering and live serving hear
identical samples.

Channels are averaged to mono *before* resampling (both are linear, so the order does not change
the result, and resampling one channel costs a third as much as two).  soxr's streaming resampler
keeps its filter state between chunks, so 20 ms chunk boundaries add no clicks; its output comes
in bursts and trails the input by roughly 7-37 ms at the default ``"HQ"`` quality with 20 ms
chunks (``"MQ"`` is about the same; ``"LQ"`` trails less but rolls off above ~6.5 kHz, inside the
mel's 7.6 kHz band).
"""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import soxr

from engines.mel import SAMPLE_RATE

__all__ = ["AudioFormatError", "Resampler", "load_audio", "resample", "to_float_mono"]


class AudioFormatError(ValueError):
    """The input is not decodable audio; the message says what is wrong and what to do."""


_INT_SCALE = {np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2147483648.0}


def to_float_mono(samples: np.ndarray, channels: int = 1, planar: bool | None = None) -> np.ndarray:
    """Average channels and scale integers to float32 in [-1, 1).

    ``samples`` may be 1-D interleaved, ``(1, n * channels)`` interleaved (PyAV packed formats),
    ``(channels, n)`` planar (PyAV planar formats) or ``(n, channels)``.  ``planar`` forces the
    reading of a 2-D array when its shape alone is ambiguous (e.g. 2x2).
    """
    x = np.asarray(samples)
    if x.dtype == np.uint8:  # PyAV "u8": unsigned, midpoint 128
        x = (x.astype(np.float32) - 128.0) / 128.0
    elif x.dtype in _INT_SCALE:
        x = x.astype(np.float32) * np.float32(1.0 / _INT_SCALE[x.dtype])
    elif x.dtype.kind == "f":
        x = x.astype(np.float32, copy=False)
    else:
        raise AudioFormatError(f"unsupported sample type {x.dtype}; pass int16, int32, uint8 or float samples")
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    if x.ndim == 1 or (x.ndim == 2 and x.shape[0] == 1 and not planar):
        flat = x.reshape(-1)
        if channels == 1:
            return flat
        if flat.size % channels:
            raise ValueError(f"{flat.size} interleaved samples do not divide into {channels} channels")
        return flat.reshape(-1, channels).mean(axis=1, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected 1-D or 2-D samples, got shape {x.shape}")
    if planar or (planar is None and x.shape[0] == channels):
        return x.mean(axis=0, dtype=np.float32) if x.shape[0] > 1 else x[0]
    if x.shape[1] == channels:
        return x.mean(axis=1, dtype=np.float32) if channels > 1 else x[:, 0]
    raise ValueError(f"cannot read shape {x.shape} as {channels}-channel audio")


class Resampler:
    """Stateful conversion of arbitrary audio chunks to float32 mono 16 kHz.

    Not thread-safe: one per input stream.  A change of input rate flushes the old filter (its
    tail is returned with the first chunk at the new rate) and starts a fresh one, so a renegotiated
    track never mixes rates inside one filter.
    """

    def __init__(self, out_rate: int = SAMPLE_RATE, quality: str = "HQ") -> None:
        self.out_rate = int(out_rate)
        self.quality = quality
        self._rate: int | None = None
        self._stream: soxr.ResampleStream | None = None

    @property
    def in_rate(self) -> int | None:
        """The input rate of the current filter, or None before the first chunk."""
        return self._rate

    def push(self, samples: np.ndarray, rate: int, channels: int = 1, planar: bool | None = None) -> np.ndarray:
        """Convert one chunk; returns the 16 kHz mono samples that are ready (maybe none)."""
        rate = int(rate)
        if rate <= 0:
            raise ValueError(f"sample rate must be positive, got {rate}")
        mono = to_float_mono(samples, channels, planar)
        tail = self._switch_rate(rate)
        out = mono.copy() if self._stream is None else self._stream.resample_chunk(mono)
        return out if tail.size == 0 else np.concatenate([tail, out])

    def push_frame(self, frame: av.AudioFrame) -> np.ndarray:
        """Convert one decoded PyAV frame (e.g. aiortc's 48 kHz stereo s16 Opus frames)."""
        return self.push(frame.to_ndarray(), frame.sample_rate, len(frame.layout.channels),
                         planar=frame.format.is_planar)

    def flush(self) -> np.ndarray:
        """End of the signal: return what the filter still holds and start afresh."""
        return self._switch_rate(None)

    def _switch_rate(self, rate: int | None) -> np.ndarray:
        if rate == self._rate and rate is not None:
            return np.zeros(0, np.float32)
        tail = np.zeros(0, np.float32)
        if self._stream is not None:
            tail = self._stream.resample_chunk(np.zeros(0, np.float32), last=True)
        self._rate = rate
        self._stream = None
        if rate is not None and rate != self.out_rate:
            self._stream = soxr.ResampleStream(rate, self.out_rate, 1, dtype="float32", quality=self.quality)
        return tail


def resample(samples: np.ndarray, rate: int, channels: int = 1) -> np.ndarray:
    """Whole-signal conversion to float32 mono 16 kHz through the streaming path."""
    r = Resampler()
    head = r.push(samples, rate, channels)
    tail = r.flush()
    return np.concatenate([head, tail]) if tail.size else head


def load_audio(source: str | Path | bytes) -> np.ndarray:
    """Decode a file (path or its bytes) PyAV/FFmpeg can read to float32 mono 16 kHz.

    Raises :class:`AudioFormatError` for anything that is not decodable audio, and
    FileNotFoundError for a missing path; FFmpeg's own exceptions never escape.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise AudioFormatError("the audio data is empty (0 bytes); send a WAV, MP3, OGG or other audio file")
        name, handle = "the audio data", io.BytesIO(data)
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"no audio file at {path}")
        if path.stat().st_size == 0:
            raise AudioFormatError(f"{path} is empty (0 bytes); point to a WAV, MP3, OGG or other audio file")
        name, handle = str(path), str(path)
    try:
        container = av.open(handle, mode="r")
    except av.error.FFmpegError as exc:
        raise AudioFormatError(f"{name} is not a readable audio file ({exc.__class__.__name__}: "
                               f"{getattr(exc, 'strerror', None) or exc}); "
                               "convert it to WAV or another common audio format") from None
    with container:
        if not container.streams.audio:
            kinds = ", ".join(s.type for s in container.streams) or "none"
            raise AudioFormatError(f"{name} has no audio stream (streams: {kinds}); "
                                   "supply a file with a soundtrack")
        stream = container.streams.audio[0]
        resampler, parts = Resampler(), []
        try:
            for frame in container.decode(stream):
                parts.append(resampler.push_frame(frame))
        except av.error.FFmpegError as exc:
            decoded = sum(p.size for p in parts) / SAMPLE_RATE
            raise AudioFormatError(f"{name} is damaged: decoding failed after {decoded:.2f} s "
                                   f"({getattr(exc, 'strerror', None) or exc}); re-export or re-encode it") from None
        parts.append(resampler.flush())
    wav = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    if wav.size == 0:
        raise AudioFormatError(f"{name} contains no audio samples (zero length); supply a non-empty recording")
    return wav
