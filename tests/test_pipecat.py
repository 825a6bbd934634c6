"""LipstreamVideoService in a real Pipecat pipeline: Pipecat's own test source and sink
(``pipecat.tests.utils.run_test``: source -> service -> sink, a PipelineWorker, a WorkerRunner).

In-process mode (the engine inside the pipeline): one TTS segment played to its end, then a
second one interrupted mid-sentence.  Remote mode: the same against a lipstream server
(``serving()``), over WebRTC + the streaming WebSocket.

Needs pipecat-ai, which cannot share an environment with the base install's mediapipe 0.10.14
(protobuf >= 5 vs < 5): run it from an agents environment (docs/integrations.md).
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import soxr

pytest.importorskip("pipecat", reason="needs pipecat-ai (it requires protobuf>=5, which the base install's "
                                      "mediapipe 0.10.14 forbids): see docs/integrations.md, 'agents environment'")

from pipecat.frames.frames import (  # noqa: E402
    InterruptionFrame,
    OutputImageRawFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.tests.utils import SleepFrame, run_test  # noqa: E402

from realtime.integrations.pipecat import LipstreamVideoService  # noqa: E402
from server_harness import flite_speech, serving  # noqa: E402

SPEECH = "Good morning everyone. Today we will look at a wide open map of the whole bay area."
RATE = 24000
CHUNK = 480  # 20 ms, as TTS services send them


def tts_frames(speech: np.ndarray, context: str) -> list:
    pcm = (np.clip(speech, -1, 1) * 32767).astype(np.int16)
    frames = [TTSStartedFrame(context_id=context)]
    frames += [TTSAudioRawFrame(audio=pcm[i:i + CHUNK].tobytes(), sample_rate=RATE, num_channels=1,
                                context_id=context) for i in range(0, pcm.size, CHUNK)]
    return frames


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:
    s16 = flite_speech(SPEECH, tmp_path_factory.mktemp("pipecat") / "speech.wav")
    return soxr.resample(s16, 16000, RATE).astype(np.float32)


def run_pipeline(service: LipstreamVideoService, speech: np.ndarray) -> list:
    seconds = speech.size / RATE
    send = [SleepFrame(0.6), *tts_frames(speech, "a"), TTSStoppedFrame(context_id="a"),
            SleepFrame(seconds + 1.0),
            *tts_frames(speech, "b"), SleepFrame(1.8), InterruptionFrame(), SleepFrame(0.8)]
    down, _ = asyncio.run(run_test(service, frames_to_send=send, start_timeout=30.0))
    return list(down)


@pytest.fixture(scope="module")
def inprocess(engine, avatar, speech) -> dict:
    service = LipstreamVideoService(engine=engine, avatar=avatar, sample_rate=RATE)
    return {"down": run_pipeline(service, speech), "events": service.events, "speech_s": speech.size / RATE,
            "speech": speech}


def segments(down: list) -> dict:
    """Positions in the downstream sequence: the held TTSStoppedFrame, the interruption."""
    kinds = [type(f) for f in down]
    return {"stop_a": kinds.index(TTSStoppedFrame), "interrupt": kinds.index(InterruptionFrame)}


def test_images_at_25fps_with_the_mouth_moving(inprocess: dict) -> None:
    down = inprocess["down"]
    images = [f for f in down if isinstance(f, OutputImageRawFrame)]
    assert images and images[0].size == (512, 512) and images[0].format == "RGB"
    assert len(images[0].image) == 512 * 512 * 3 and images[0].sync_with_audio
    total_s = 0.6 + 2 * inprocess["speech_s"] + 1.0 + 0.8  # roughly what the pipeline ran for
    assert len(images) > 0.8 * 25 * (total_s - inprocess["speech_s"] + 1.8), len(images)
    at = segments(down)
    opening = [f.metadata["lipstream"]["opening"] for f in down[:at["stop_a"]] if isinstance(f, OutputImageRawFrame)]
    assert max(opening) > 0.3 and min(opening) < 0.05


def test_audio_is_the_tts_audio_paired_with_frames(inprocess: dict) -> None:
    down, at = inprocess["down"], segments(inprocess["down"])
    first = down[:at["stop_a"]]
    audio = [f for f in first if isinstance(f, TTSAudioRawFrame)]
    assert audio and all(a.sample_rate == RATE and a.num_channels == 1 for a in audio)
    played = sum(a.num_frames for a in audio) / RATE
    assert abs(played - inprocess["speech_s"]) < 0.09, (played, inprocess["speech_s"])  # whole frames of it
    # every audio block is one frame's worth (40 ms; more after frames skipped under load) and is
    # followed by its image
    assert all(a.num_frames % (RATE // 25) == 0 for a in audio)
    assert np.median([a.num_frames for a in audio]) == RATE // 25
    for i, f in enumerate(first):
        if isinstance(f, TTSAudioRawFrame):
            assert isinstance(first[i + 1], OutputImageRawFrame)
    # the TTS's own samples, unchanged, not the 16 kHz timeline resampled back
    ref = (np.clip(inprocess["speech"], -1, 1) * 32767).astype(np.int16).astype(np.float64)
    got = np.concatenate([np.frombuffer(a.audio, np.int16) for a in audio]).astype(np.float64)
    n = got.size + ref.size
    lag = int(np.argmax(np.fft.irfft(np.fft.rfft(got, n) * np.conj(np.fft.rfft(ref, n)), n)))
    part = got[lag:lag + ref.size]
    assert part.size > 0.95 * ref.size and np.abs(part - ref[:part.size]).max() <= 1.0, lag
    assert audio[0].context_id == "a"


def test_tts_stopped_held_until_the_speech_played(inprocess: dict) -> None:
    down, at = inprocess["down"], segments(inprocess["down"])
    stop = down[at["stop_a"]]
    assert stop.context_id == "a"
    last_audio = max(i for i, f in enumerate(down[:at["interrupt"]]) if isinstance(f, TTSAudioRawFrame)
                     and f.context_id == "a" and i < at["stop_a"] + 5)
    assert last_audio < at["stop_a"]
    images_before = sum(isinstance(f, OutputImageRawFrame) for f in down[:at["stop_a"]])
    assert images_before > 25 * inprocess["speech_s"]  # not forwarded when the TTS finished, seconds earlier
    kinds = [e["type"] for e in inprocess["events"] if e["type"] in ("speech_started", "speech_ended", "interrupted")]
    assert kinds == ["speech_started", "speech_ended", "speech_started", "interrupted"], kinds
    assert "backpressure" in [e["type"] for e in inprocess["events"]]  # the TTS sent faster than real time


def test_interruption_clears_within_one_frame(inprocess: dict) -> None:
    down, at = inprocess["down"], segments(inprocess["down"])
    before = [f.metadata["lipstream"]["opening"] for f in down[at["stop_a"]:at["interrupt"]]
              if isinstance(f, OutputImageRawFrame)]
    assert max(before[-25:]) > 0.3  # segment b was playing
    after = down[at["interrupt"] + 1:]
    images = [f for f in after if isinstance(f, OutputImageRawFrame)]
    assert len(images) > 10
    assert images[0].metadata["lipstream"]["opening"] < 0.05, [i.metadata for i in images[:3]]
    assert max(i.metadata["lipstream"]["opening"] for i in images) < 0.05
    assert not any(isinstance(f, TTSAudioRawFrame) for f in after)  # the rest of b is gone
    assert not any(isinstance(f, TTSStoppedFrame) for f in after)


@pytest.fixture(scope="module")
def remote(engine, speech) -> dict:
    async def go() -> dict:
        async with serving(engine, token="s3cret") as (base, _):  # a --token server: the remote mode sends it
            service = LipstreamVideoService(url=base, sample_rate=RATE, token="s3cret")
            seconds = speech.size / RATE
            send = [SleepFrame(1.0), *tts_frames(speech, "a"), TTSStoppedFrame(context_id="a"),
                    SleepFrame(seconds + 1.0), *tts_frames(speech, "b"), SleepFrame(1.8),
                    InterruptionFrame(), SleepFrame(0.8)]
            down, _ = await run_test(service, frames_to_send=send, start_timeout=30.0)
            return {"down": list(down), "events": service.events, "speech_s": seconds}

    return asyncio.run(go())


def test_remote_mode_streams_video_audio_and_interrupts(remote: dict) -> None:
    down, at = remote["down"], segments(remote["down"])
    images = [f for f in down if isinstance(f, OutputImageRawFrame)]
    assert len(images) > 100 and images[0].size == (512, 512)
    audio = [f for f in down[:at["stop_a"]] if isinstance(f, TTSAudioRawFrame)]
    assert audio and audio[0].sample_rate == 48000
    # The server played the whole first segment and dropped nothing.  Before the remote mode paced
    # its own sending, the TTS's burst overfilled the server's 3 s buffer before the backpressure
    # event got back, and the segment's last ~1.6 s was dropped (played_s 3.04 of 4.63).
    ended = next(e for e in remote["events"] if e["type"] == "speech_ended")
    assert ended["played_s"] > 0.98 * remote["speech_s"], ended
    assert not [e for e in remote["events"] if e["type"] == "error"], remote["events"]
    # ... and came back over WebRTC before its TTSStoppedFrame: 4.60 s of 4.63 on an idle machine;
    # at load average 11 on 2 cores loopback lost packets (the server and client share one starved
    # event loop) and 3.6-4.0 s came back
    assert sum(a.num_frames for a in audio) / 48000 > 0.7 * remote["speech_s"]
    kinds = [e["type"] for e in remote["events"] if e["type"] in ("speech_started", "speech_ended", "interrupted")]
    assert kinds == ["speech_started", "speech_ended", "speech_started", "interrupted"], kinds
    after = down[at["interrupt"] + 1:]
    late_audio = [f for f in after if isinstance(f, TTSAudioRawFrame)]
    assert len(late_audio) <= 2, len(late_audio)  # at most the packets already on their way
