"""LiveKit Agents: :class:`LipstreamVideoGenerator`, a ``VideoGenerator`` for ``AvatarRunner``.

livekit-agents 1.x runs an avatar as a participant of its own: the agent sends its TTS audio to it
(byte streams on topic ``lk.audio_stream``; ``DataStreamAudioReceiver`` receives them, and turns
the RPC ``lk.clear_buffer`` into ``clear_buffer``), and :class:`AvatarRunner` drives a
``VideoGenerator``: ``push_audio(rtc.AudioFrame | AudioSegmentEnd)``, ``clear_buffer()``, and an
async iterator of ``rtc.VideoFrame`` / ``rtc.AudioFrame`` / ``AudioSegmentEnd`` that it feeds to an
``rtc.AVSynchronizer`` (and answers ``lk.playback_finished`` from).  This generator yields, 25
times a second, the avatar as an RGB24 ``rtc.VideoFrame``, each preceded while speech plays by the
40 ms ``rtc.AudioFrame`` of the agent's own audio that goes with it, and ``AudioSegmentEnd`` once
a segment's last audio has been yielded.  ``clear_buffer`` interrupts: queued speech is dropped and
no frame rendered before it is yielded after it.

    from livekit.agents.voice.avatar import AvatarOptions, AvatarRunner, DataStreamAudioReceiver
    from realtime.integrations.livekit import LipstreamVideoGenerator

    gen = LipstreamVideoGenerator()                      # or url="http://127.0.0.1:8080" (remote)
    await gen.start()
    runner = AvatarRunner(room, audio_recv=DataStreamAudioReceiver(room), video_gen=gen,
                          options=AvatarOptions(video_width=512, video_height=512, video_fps=25,
                                                audio_sample_rate=24000, audio_channels=1))
    await runner.start()

Same two modes as the Pipecat service (``backends.py``).  Needs ``livekit-agents`` (the ``livekit``
extra; docs/integrations.md says how to install it beside lipstream).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np

try:
    from livekit import rtc
    from livekit.agents.voice.avatar import AudioSegmentEnd, VideoGenerator
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError("realtime.integrations.livekit needs livekit-agents (pip install 'livekit-agents==1.8.9'; "
                      "see docs/integrations.md)") from exc

from realtime.integrations.backends import (
    AvatarAudio,
    AvatarBackend,
    AvatarEvent,
    AvatarVideo,
    InProcessAvatar,
)
from realtime.integrations.remote import RemoteAvatar

__all__ = ["LipstreamVideoGenerator"]


class LipstreamVideoGenerator(VideoGenerator):
    """A lip-synced avatar for LiveKit's ``AvatarRunner``.

    ``url``: a lipstream server to drive (remote mode; ``token``: its ``--token``); without it
    the engine runs in this process (``engine``, ``avatar`` as :class:`InProcessAvatar` takes
    them).  ``sample_rate``: the rate of the audio yielded (in-process; set ``AvatarOptions.audio_sample_rate`` to it); remote, the
    server's returned audio is 48 kHz.  ``backend``: any :class:`AvatarBackend` instead.
    """

    def __init__(self, *, url: str | None = None, engine=None, avatar=None, sample_rate: int = 24000,  # noqa: ANN001
                 token: str | None = None,
                 backend: AvatarBackend | None = None) -> None:
        if backend is None:
            backend = (RemoteAvatar(url, rate=sample_rate, avatar=avatar, token=token) if url
                       else InProcessAvatar(engine=engine, avatar=avatar, rate=sample_rate))
        self.backend = backend
        self._started = False
        self._start_lock = asyncio.Lock()
        self.events: list[dict] = []  # the speech stream's events (debugging, tests)
        self.frames: list[tuple[str, float | None]] = []  # ("video", opening) / ("audio", seconds) / ("end", None)

    async def start(self) -> None:
        """Load the engine and avatar (or connect to the server); also done by the first use."""
        async with self._start_lock:
            if not self._started:
                await self.backend.start()
                self._started = True

    async def push_audio(self, frame: rtc.AudioFrame | AudioSegmentEnd) -> None:
        await self.start()
        if isinstance(frame, AudioSegmentEnd):
            await self.backend.flush()
            return
        pcm = np.frombuffer(frame.data, np.int16)
        if frame.num_channels > 1:
            pcm = pcm.reshape(-1, frame.num_channels).mean(axis=1).astype(np.int16)
        await self.backend.push(pcm, frame.sample_rate)

    async def clear_buffer(self) -> None:
        if self._started:
            self.frames.append(("clear", None))
            await self.backend.clear()

    def __aiter__(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        await self.start()
        out = self.backend.output
        while True:
            item = await out.get()
            if isinstance(item, AvatarVideo):
                h, w = item.rgb.shape[:2]
                self.frames.append(("video", item.opening))
                yield rtc.VideoFrame(w, h, rtc.VideoBufferType.RGB24, item.rgb.tobytes())
            elif isinstance(item, AvatarAudio):
                if item.speech:
                    self.frames.append(("audio", item.pcm.size / item.rate))
                    yield rtc.AudioFrame(item.pcm.tobytes(), item.rate, 1, item.pcm.size)
            elif isinstance(item, AvatarEvent):
                self.events.append(item.event)
                if item.event["type"] == "speech_ended":
                    self.frames.append(("end", None))
                    yield AudioSegmentEnd()

    async def aclose(self) -> None:
        if self._started:
            self._started = False
            await self.backend.stop()
