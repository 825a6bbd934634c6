"""LipstreamVideoGenerator under livekit-agents' own AvatarRunner, in-process, no LiveKit server.

The agent side is livekit's ``QueueAudioOutput`` (an ``AudioOutput`` the agent's TTS writes to, and
the runner's ``AudioReceiver``); the avatar side is the real ``AvatarRunner`` with its real
``rtc.AudioSource`` / ``rtc.VideoSource`` / ``rtc.AVSynchronizer`` (livekit's FFI runs locally).
Only the room is a stand-in (no LiveKit server can be installed here): it reports itself connected
and accepts the two track publications.  Not run: a real room, the ``lk.audio_stream`` byte streams
and the ``lk.clear_buffer`` / ``lk.playback_finished`` RPCs (``DataStreamAudioReceiver``).

Needs livekit-agents, which cannot share an environment with the base install's mediapipe 0.10.14
(protobuf >= 5 vs < 5): run it from an agents environment (docs/integrations.md).
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import soxr

pytest.importorskip("livekit.agents", reason="needs livekit-agents (it requires protobuf>=5, which the base "
                                             "install's mediapipe 0.10.14 forbids): see docs/integrations.md, "
                                             "'agents environment'")

from livekit import rtc  # noqa: E402
from livekit.agents.voice.avatar import AvatarOptions, AvatarRunner, QueueAudioOutput  # noqa: E402

from realtime.integrations.livekit import LipstreamVideoGenerator  # noqa: E402
from server_harness import flite_speech  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _livekit_ffi_disposed_before_exit():
    """Dispose livekit's Rust runtime while the interpreter is alive.  Left to livekit's atexit
    hook, a tokio worker can call back into a finalising Python and abort the process after every
    test passed ("panic in a function that cannot unwind", seen once in a fresh-clone `make test`)."""
    yield
    from livekit.rtc._ffi_client import FfiClient  # private: livekit has no public dispose

    if FfiClient._instance is not None:
        FfiClient._instance._dispose()


SPEECH = "Good morning everyone. Today we will look at a wide open map of the whole bay area."
RATE = 24000
CHUNK = 480


class _Publication:
    async def wait_for_subscription(self) -> None:
        pass


class _Participant:
    def __init__(self) -> None:
        self.tracks: list = []

    async def publish_track(self, track, options):  # noqa: ANN001, ANN201
        self.tracks.append((track.name, options.source))
        return _Publication()


class StandInRoom(rtc.EventEmitter):
    """What AvatarRunner asks of a room: connected, events, track publishing."""

    def __init__(self) -> None:
        super().__init__()
        self.local_participant = _Participant()

    def isconnected(self) -> bool:
        return True


@pytest.fixture(scope="module")
def run(engine, avatar, tmp_path_factory) -> dict:
    s16 = flite_speech(SPEECH, tmp_path_factory.mktemp("livekit") / "speech.wav")
    pcm = (np.clip(soxr.resample(s16, 16000, RATE), -1, 1) * 32767).astype(np.int16)

    async def say(audio_out: QueueAudioOutput) -> None:
        for i in range(0, pcm.size, CHUNK):
            part = pcm[i:i + CHUNK]
            await audio_out.capture_frame(rtc.AudioFrame(part.tobytes(), RATE, 1, part.size))

    async def go() -> dict:
        audio_out = QueueAudioOutput(sample_rate=RATE)
        finished: list[tuple[float, object]] = []
        audio_out.on("playback_finished", lambda ev: finished.append((time.monotonic(), ev)))
        gen = LipstreamVideoGenerator(engine=engine, avatar=avatar, sample_rate=RATE)
        await gen.start()
        room = StandInRoom()
        runner = AvatarRunner(room, audio_recv=audio_out, video_gen=gen,
                              options=AvatarOptions(video_width=512, video_height=512, video_fps=25,
                                                    audio_sample_rate=RATE, audio_channels=1))
        await runner.start()
        t0 = time.monotonic()
        await asyncio.sleep(0.6)
        await say(audio_out)
        audio_out.flush()
        deadline = time.monotonic() + pcm.size / RATE + 4.0
        while not finished and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)
        await say(audio_out)  # segment 2, interrupted
        audio_out.flush()
        await asyncio.sleep(1.8)
        t_clear = time.monotonic()
        audio_out.clear_buffer()
        deadline = time.monotonic() + 3.0
        while len(finished) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.8)
        t1 = time.monotonic()
        await runner.aclose()
        await gen.aclose()
        return {"finished": finished, "t_clear": t_clear, "frames": list(gen.frames), "events": gen.events,
                "tracks": room.local_participant.tracks, "wall_s": t1 - t0, "speech_s": pcm.size / RATE}

    return asyncio.run(go())


def test_runner_published_audio_and_video(run: dict) -> None:
    names = [n for n, _ in run["tracks"]]
    assert names == ["avatar_audio", "avatar_video"]


def test_frames_paced_at_25fps_with_the_mouth_moving(run: dict) -> None:
    frames = run["frames"]
    videos = [o for k, o in frames if k == "video"]
    # AVSynchronizer paces what the runner pushes: ~25 fps over the run (its 100 ms queue aside)
    assert abs(len(videos) / run["wall_s"] - 25.0) < 2.0, len(videos) / run["wall_s"]
    first_end = [k for k, _ in frames].index("end")
    assert max(o for k, o in frames[:first_end] if k == "video") > 0.3


def test_segment_end_and_playback_finished(run: dict) -> None:
    kinds = [k for k, _ in run["frames"]]
    first_end = kinds.index("end")
    played = sum(s for k, s in run["frames"][:first_end] if k == "audio")
    assert abs(played - run["speech_s"]) < 0.09, (played, run["speech_s"])
    assert kinds[first_end - 1] == "video" and kinds[first_end - 2] == "audio"  # after its last audio+frame
    ev = run["finished"][0][1]
    assert ev.interrupted is False and abs(ev.playback_position - run["speech_s"]) < 0.09, ev


def test_clear_buffer_interrupts_within_one_frame(run: dict) -> None:
    assert len(run["finished"]) == 2
    t, ev = run["finished"][1]
    assert ev.interrupted is True and 1.0 < ev.playback_position < 2.6, ev
    assert t - run["t_clear"] < 0.2
    frames = run["frames"]
    at = [k for k, _ in frames].index("clear")
    before = [o for k, o in frames[at - 30:at] if k == "video"]
    after = frames[at + 1:]
    assert max(before) > 0.3
    videos = [o for k, o in after if k == "video"]
    assert len(videos) > 10 and videos[0] < 0.05 and max(videos) < 0.05, videos[:3]
    assert not any(k in ("audio", "end") for k, _ in after)
    assert [e["type"] for e in run["events"] if e["type"] == "interrupted"]
