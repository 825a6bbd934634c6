"""realtime.mel_stream.MelStream: streamed frames equal the whole-signal mel, windows read right."""

from __future__ import annotations

import numpy as np
import pytest

from engines.mel import N_MELS, SILENCE_VALUE, melspectrogram
from realtime.mel_stream import MelStream
from engines.windows import WINDOW, windows_at


def feed(stream: MelStream, wav: np.ndarray, sizes) -> list[int]:
    """Push ``wav`` in chunks whose sizes come from ``sizes`` (an int or an iterator)."""
    counts, i = [], 0
    while i < wav.size:
        n = sizes if isinstance(sizes, int) else next(sizes)
        counts.append(stream.push(wav[i:i + n]))
        i += n
    return counts


def random_sizes(seed: int):
    rng = np.random.default_rng(seed)
    while True:
        yield int(rng.choice([1, 7, 199, 200, 201, 320, 799, 800, 801, 4000, 20000]))


@pytest.mark.parametrize("sizes", [1, 160, 320, 441, "random", 10**6])
def test_streamed_frames_equal_offline(speech_16k: np.ndarray, sizes) -> None:
    wav = speech_16k
    ref = melspectrogram(wav)
    stream = MelStream(history_s=60)
    counts = feed(stream, wav, random_sizes(3) if sizes == "random" else sizes)
    # Exactly the frames whose 800-sample span is complete, no more, no fewer.
    assert sum(counts) == stream.frames_ready == (wav.size - 400) // 200 + 1
    assert stream.samples_seen == wav.size
    n = stream.frames_ready
    assert np.abs(stream.frames(0, n) - ref[:, :n]).max() <= 1e-4
    # finish() adds the zero-padded tail frames and then matches melspectrogram entirely.
    stream.finish()
    assert stream.frames_ready == ref.shape[1]
    assert np.abs(stream.frames(0, ref.shape[1]) - ref).max() <= 1e-4


def test_frame_becomes_ready_exactly_when_complete() -> None:
    stream = MelStream()
    x = np.random.default_rng(0).standard_normal(2000).astype(np.float32) * 0.1
    assert stream.push(x[:399]) == 0 and stream.frames_ready == 0
    assert stream.push(x[399:400]) == 1  # frame 0 spans samples [-400, 400)
    assert stream.push(x[400:599]) == 0
    assert stream.push(x[599:600]) == 1  # frame 1 needs up to sample 600
    assert stream.frames_ready == 2


def test_windows_equal_offline_windows(speech_16k: np.ndarray) -> None:
    stream = MelStream(history_s=60)
    feed(stream, speech_16k, 320)
    mel = melspectrogram(speech_16k)[:, : stream.frames_ready]
    ends = np.array([-5, 0, 3, 16, 17, 100, stream.frames_ready, stream.frames_ready + 9])
    got = stream.windows(ends)
    assert got.shape == (ends.size, 1, N_MELS, WINDOW)
    assert np.abs(got - windows_at(mel, ends)).max() <= 1e-4
    for e in ends:
        assert np.array_equal(stream.window(int(e)), got[list(ends).index(e)])


def test_window_before_audio_is_silence() -> None:
    stream = MelStream()
    assert np.all(stream.window(16) == SILENCE_VALUE)
    noise = np.random.default_rng(4).standard_normal(1000).astype(np.float32) * 0.3
    stream.push(noise)  # frames 0..3 ready
    w = stream.window(4)[0]
    assert np.all(w[:, :12] == SILENCE_VALUE)
    assert np.all(w[:, 12:] > SILENCE_VALUE)  # loud noise is not silence
    assert np.all(stream.window(20)[0][:, 4:] == SILENCE_VALUE)  # not computed yet


def test_ring_eviction_reads_silence_and_keeps_recent() -> None:
    wav = (np.random.default_rng(5).standard_normal(16000 * 3) * 0.1).astype(np.float32)
    ref = melspectrogram(wav)
    stream = MelStream(history_s=0.5)  # 40 frames
    assert stream.capacity == 40
    feed(stream, wav, 441)
    n = stream.frames_ready
    assert stream.oldest_frame == n - 40
    assert np.abs(stream.frames(n - 40, n) - ref[:, n - 40:n]).max() <= 1e-4
    assert np.all(stream.frames(0, n - 40) == SILENCE_VALUE)
    straddle = stream.window(n - 40 + 6)[0]
    assert np.all(straddle[:, :10] == SILENCE_VALUE)
    assert np.abs(straddle[:, 10:] - ref[:, n - 40:n - 34]).max() <= 1e-4


def test_one_push_larger_than_ring() -> None:
    wav = (np.random.default_rng(6).standard_normal(16000 * 2) * 0.1).astype(np.float32)
    stream = MelStream(history_s=0.25)
    assert stream.push(wav) == (wav.size - 400) // 200 + 1
    n = stream.frames_ready
    assert np.abs(stream.frames(n - stream.capacity, n)
                  - melspectrogram(wav)[:, n - stream.capacity:n]).max() <= 1e-4


def test_empty_push_and_reset() -> None:
    stream = MelStream()
    assert stream.push(np.zeros(0, np.float32)) == 0
    assert stream.push([]) == 0
    stream.push(np.ones(3000, np.float32) * 0.2)
    assert stream.push(np.zeros(0, np.float32)) == 0
    assert stream.frames_ready > 0
    stream.reset()
    assert stream.frames_ready == 0 and stream.samples_seen == 0
    assert np.all(stream.window(16) == SILENCE_VALUE)
    x = np.random.default_rng(7).standard_normal(4000).astype(np.float32) * 0.1
    stream.push(x)
    assert np.abs(stream.frames(0, stream.frames_ready)
                  - melspectrogram(x)[:, : stream.frames_ready]).max() <= 1e-4


def test_out_buffer_reused_and_input_validated() -> None:
    stream = MelStream()
    stream.push(np.ones(8000, np.float32) * 0.1)
    buf = np.zeros((1, N_MELS, WINDOW), np.float32)
    assert stream.window(stream.frames_ready, out=buf) is buf
    with pytest.raises(ValueError, match="mono"):
        stream.push(np.zeros((2, 100), np.float32))
    stream.finish()
    with pytest.raises(RuntimeError, match="reset"):
        stream.push(np.zeros(10, np.float32))
