"""realtime.audio_io: decoding files, streaming resampling, helpful errors."""

from __future__ import annotations

import wave
from pathlib import Path

import av
import numpy as np
import pytest

from realtime.audio_io import AudioFormatError, Resampler, load_audio, resample, to_float_mono


def sine(freq: float, rate: int, seconds: float, channels: int = 1) -> np.ndarray:
    """(n, channels) float32 sine at 0.5 full scale, the same in every channel."""
    t = np.arange(int(rate * seconds)) / rate
    return np.repeat((0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)[:, None], channels, axis=1)


def write_wav_stdlib(path: Path, x: np.ndarray, rate: int) -> None:
    pcm = np.clip(np.rint(x * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(x.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def write_with_pyav(path: Path, x: np.ndarray, rate: int, codec: str, fmt: str) -> None:
    """Encode (n, channels) float samples with PyAV in sample format ``fmt`` (packed)."""
    layout = "mono" if x.shape[1] == 1 else "stereo"
    data = x if fmt == "flt" else np.clip(np.rint(x * 32767), -32768, 32767).astype(np.int16)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        stream.format = fmt
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data).reshape(1, -1), format=fmt, layout=layout)
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def peak_hz(x: np.ndarray, rate: int = 16000) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / rate)[np.argmax(spec)])


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("writer", ["wave-s16", "pyav-s16", "pyav-flt"])
def test_load_wav_keeps_length_and_pitch(tmp_path: Path, rate: int, channels: int, writer: str) -> None:
    x = sine(440.0, rate, 1.5, channels)
    path = tmp_path / "tone.wav"
    if writer == "wave-s16":
        write_wav_stdlib(path, x, rate)
    elif writer == "pyav-s16":
        write_with_pyav(path, x, rate, "pcm_s16le", "s16")
    else:
        write_with_pyav(path, x, rate, "pcm_f32le", "flt")
    y = load_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(y.size - 24000) <= 2  # 1.5 s at 16 kHz
    assert abs(peak_hz(y) - 440.0) <= 1.0
    # Level survives too (0.5 amplitude sine: RMS 0.354), away from the filter's edges.
    assert abs(np.sqrt(np.mean(y[2000:-2000] ** 2)) - 0.3536) < 0.01
    assert np.array_equal(load_audio(path.read_bytes()), y)  # bytes and paths decode alike


@pytest.mark.parametrize("suffix, codec, fmt", [("mp3", "libmp3lame", "fltp"), ("flac", "flac", "s16"),
                                                ("ogg", "libvorbis", "fltp")])
def test_load_compressed(tmp_path: Path, suffix: str, codec: str, fmt: str) -> None:
    if codec not in av.codecs_available:
        pytest.skip(f"this FFmpeg build has no {codec} encoder")
    path = tmp_path / f"tone.{suffix}"
    x = sine(1000.0, 44100, 1.0, 2)
    if fmt == "fltp":  # planar encoders take (channels, n)
        with av.open(str(path), "w") as out:
            stream = out.add_stream(codec, rate=44100, layout="stereo")
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x.T), format="fltp", layout="stereo")
            frame.sample_rate = 44100
            for packet in [*stream.encode(frame), *stream.encode(None)]:
                out.mux(packet)
    else:
        write_with_pyav(path, x, 44100, codec, fmt)
    y = load_audio(path)
    assert abs(y.size - 16000) <= 1600  # lossy codecs may pad a little
    assert abs(peak_hz(y) - 1000.0) <= 2.0


def chunks_48k_stereo_s16(x: np.ndarray, chunk: int = 960):
    """Like aiortc's Opus output: packed s16 stereo frames of 20 ms."""
    pcm = np.clip(np.rint(x * 32767), -32768, 32767).astype(np.int16)
    for i in range(0, len(pcm), chunk):
        frame = av.AudioFrame.from_ndarray(pcm[i:i + chunk].reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = 48000
        yield frame


def test_streaming_frames_equal_offline() -> None:
    rng = np.random.default_rng(0)
    x = np.clip(sine(300.0, 48000, 2.0, 2) + rng.standard_normal((96000, 2)).astype(np.float32) * 0.05, -1, 1)
    r = Resampler()
    parts = [r.push_frame(f) for f in chunks_48k_stereo_s16(x)]
    streamed = np.concatenate(parts + [r.flush()])
    offline = resample(np.clip(np.rint(x * 32767), -32768, 32767).astype(np.int16), 48000, channels=2)
    assert streamed.size == offline.size == 32000
    assert np.abs(streamed - offline).max() <= 1e-5
    # No chunk is held back for long: the output trails the input by well under 50 ms.
    produced = np.cumsum([p.size for p in parts])
    expected = np.arange(1, len(parts) + 1) * 320
    assert np.all(expected[5:] - produced[5:] < 800)


def test_planar_and_packed_frames_agree() -> None:
    x = sine(500.0, 48000, 0.1, 2)
    x[:, 1] *= 0.5  # distinct channels, so a wrong layout reading would show
    packed = av.AudioFrame.from_ndarray(x.reshape(1, -1), format="flt", layout="stereo")
    planar = av.AudioFrame.from_ndarray(np.ascontiguousarray(x.T), format="fltp", layout="stereo")
    for f in (packed, planar):
        f.sample_rate = 48000
    a, b = Resampler(), Resampler()
    ya = np.concatenate([a.push_frame(packed), a.flush()])
    yb = np.concatenate([b.push_frame(planar), b.flush()])
    assert np.abs(ya - yb).max() <= 1e-6
    assert abs(np.abs(ya).max() - 0.375) < 0.01  # mean of 0.5 and 0.25 amplitude


def test_to_float_mono_scales_integers() -> None:
    assert to_float_mono(np.array([-32768, 16384], np.int16)).tolist() == [-1.0, 0.5]
    assert to_float_mono(np.array([0, 128, 255], np.uint8)).tolist() == [-1.0, 0.0, 127 / 128]
    assert to_float_mono(np.array([[1000, 3000]], np.int16), channels=2).tolist() == [2000 / 32768]


def test_rate_change_midstream_rebuilds() -> None:
    r = Resampler()
    a = np.concatenate([r.push(sine(440.0, 48000, 0.5)[:, 0], 48000) for _ in range(2)])
    b = r.push(sine(440.0, 8000, 1.0)[:, 0], 8000)  # returns the 48 kHz tail, then 8 kHz output
    c = r.flush()
    total = a.size + b.size + c.size
    assert r.in_rate is None
    assert abs(total - 32000) <= 4
    assert abs(peak_hz(np.concatenate([a, b, c])[18000:30000]) - 440.0) <= 2.0


def test_16k_input_passes_through() -> None:
    x = np.random.default_rng(1).standard_normal(5000).astype(np.float32) * 0.1
    r = Resampler()
    assert np.array_equal(r.push(x, 16000), x)
    assert r.flush().size == 0


@pytest.mark.parametrize("data, words", [
    (b"", "empty"),
    (b"this is just some text, not a recording\n" * 20, "not a readable audio"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt ", "not a readable audio"),
])
def test_bad_bytes_raise_helpful_error(data: bytes, words: str) -> None:
    with pytest.raises(AudioFormatError, match=words) as info:
        load_audio(data)
    assert isinstance(info.value, ValueError)
    assert "av." not in str(info.value)  # a message for people, not a PyAV repr


def test_bad_files_raise_helpful_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioFormatError, match="empty"):
        load_audio(empty)
    text = tmp_path / "notes.wav"
    text.write_text("hello, I am not audio\n" * 50)
    with pytest.raises(AudioFormatError, match=str(text)):
        load_audio(text)
    header_only = tmp_path / "header.wav"
    write_wav_stdlib(header_only, np.zeros((0, 1), np.float32), 16000)
    with pytest.raises(AudioFormatError, match="no audio samples"):
        load_audio(header_only)
    with pytest.raises(FileNotFoundError):
        load_audio(tmp_path / "missing.wav")


def test_file_without_audio_stream(tmp_path: Path) -> None:
    path = tmp_path / "video.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for _ in range(3):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    with pytest.raises(AudioFormatError, match="no audio stream"):
        load_audio(path)


def test_truncated_wav_decodes_what_is_there(speech_wav: Path) -> None:
    data = speech_wav.read_bytes()
    whole = load_audio(data)
    half = load_audio(data[: len(data) // 2])  # header promises more than the file holds
    assert 0.4 * whole.size < half.size < 0.6 * whole.size
    assert np.abs(half[:4000] - whole[:4000]).max() <= 1e-4
