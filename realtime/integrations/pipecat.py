"""Pipecat: :class:`LipstreamVideoService`, a frame processor between the TTS and the transport.

    pipeline = Pipeline([..., tts, LipstreamVideoService(), transport.output()])

It consumes the TTS's ``TTSAudioRawFrame`` s and emits, 25 times a second, an
``OutputImageRawFrame`` (RGB) of the avatar, preceded by the ``TTSAudioRawFrame`` that plays
with it (the TTS's own audio at its own rate, re-timed to the frames; nothing while silent).
Images are marked ``sync_with_audio`` so Pipecat's output transport shows each one after the
audio before it has been sent: sound and lips stay paired.  Each image's ``metadata["lipstream"]``
holds ``{"frame", "opening"}`` (in-process mode).

- ``TTSStartedFrame`` passes through; ``TTSStoppedFrame`` ends the segment and is held back until
  the segment's last audio has gone out (so the transport's "bot stopped speaking" comes when the
  avatar stops, not when the TTS finished generating);
- ``InterruptionFrame`` (Pipecat 1.x's name; older versions had ``StartInterruptionFrame``) clears:
  queued speech is dropped, no frame rendered before the interrupt is emitted after it, and the
  next image shows the mouth closed;
- everything else passes through unchanged.

Two modes, one class: ``LipstreamVideoService()`` runs the engine in the pipeline's process
(:class:`~realtime.integrations.backends.InProcessAvatar`: the server's frame step on its own
25 fps loop, paced by real time); ``LipstreamVideoService(url="http://host:8080")`` drives a
lipstream server (:class:`~realtime.integrations.remote.RemoteAvatar`: WebRTC for the video and
returned speech, the streaming WebSocket for speech in).  Needs ``pipecat-ai`` (the ``pipecat``
extra; docs/integrations.md says how to install it beside lipstream).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

import numpy as np

try:
    from pipecat.frames.frames import (
        CancelFrame,
        EndFrame,
        Frame,
        InterruptionFrame,
        OutputImageRawFrame,
        StartFrame,
        TTSAudioRawFrame,
        TTSStartedFrame,
        TTSStoppedFrame,
    )
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError("realtime.integrations.pipecat needs pipecat-ai (pip install 'pipecat-ai==1.14.0'; "
                      "see docs/integrations.md)") from exc

from realtime.integrations.backends import (
    AvatarAudio,
    AvatarBackend,
    AvatarEvent,
    AvatarVideo,
    InProcessAvatar,
)
from realtime.integrations.remote import RemoteAvatar

log = logging.getLogger(__name__)

__all__ = ["LipstreamVideoService"]


class LipstreamVideoService(FrameProcessor):
    """A lip-synced avatar for a Pipecat pipeline (place it right after the TTS).

    ``url``: a lipstream server to drive (remote mode; ``token``: its ``--token``); without it
    the engine runs in this process (``engine``, ``avatar``: as :class:`InProcessAvatar` takes
    them).  ``sample_rate``: the rate of the audio it emits (in-process: the speech as the TTS sent it, resampled only if
    the TTS rate differs; remote: the WebSocket's rate, and the server's 48 kHz returned audio is
    what comes back).  ``backend``: any :class:`AvatarBackend` instead.
    """

    def __init__(self, *, url: str | None = None, engine=None, avatar=None, sample_rate: int = 24000,  # noqa: ANN001
                 token: str | None = None,
                 sync_with_audio: bool = True, backend: AvatarBackend | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if backend is None:
            backend = (RemoteAvatar(url, rate=sample_rate, avatar=avatar, token=token) if url
                       else InProcessAvatar(engine=engine, avatar=avatar, rate=sample_rate))
        self.backend = backend
        self._sync = sync_with_audio
        self._pump_task: asyncio.Task | None = None
        self._started = False
        self._held_stops: list[TTSStoppedFrame] = []  # TTSStoppedFrames waiting for their speech_ended
        self._contexts: deque[str | None] = deque()  # TTS context per segment queued or playing
        self._segment_open = False
        self.events: list[dict] = []  # the speech stream's events, as they came (debugging, tests)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self._start()
            await self.push_frame(frame, direction)
        elif isinstance(frame, TTSAudioRawFrame):
            if self._started:
                pcm = np.frombuffer(frame.audio, np.int16)
                if frame.num_channels > 1:
                    pcm = pcm.reshape(-1, frame.num_channels).mean(axis=1).astype(np.int16)
                if not self._segment_open:
                    self._contexts.append(frame.context_id)
                    self._segment_open = True
                await self.backend.push(pcm, frame.sample_rate)
        elif isinstance(frame, TTSStartedFrame):
            await self.push_frame(frame, direction)
        elif isinstance(frame, TTSStoppedFrame):
            if self._started and self._segment_open:
                self._segment_open = False
                self._held_stops.append(frame)
                await self.backend.flush()
            else:
                await self.push_frame(frame, direction)
        elif isinstance(frame, InterruptionFrame):
            if self._started:
                self._held_stops.clear()
                self._contexts.clear()
                self._segment_open = False
                await self.backend.clear()
            await self.push_frame(frame, direction)
        elif isinstance(frame, (EndFrame, CancelFrame)):
            await self._stop()
            await self.push_frame(frame, direction)
        else:
            await self.push_frame(frame, direction)

    async def _start(self) -> None:
        if self._started:
            return
        await self.backend.start()
        self._started = True
        self._pump_task = self.create_task(self._pump(), name="lipstream-output")

    async def _stop(self) -> None:
        if not self._started:
            return
        self._started = False
        if self._pump_task is not None:
            await self.cancel_task(self._pump_task)
            self._pump_task = None
        await self.backend.stop()

    async def cleanup(self) -> None:
        await super().cleanup()
        await self._stop()

    async def _pump(self) -> None:
        """The backend's output, in order, as Pipecat frames."""
        out = self.backend.output
        while True:
            item = await out.get()
            if isinstance(item, AvatarAudio):
                if item.speech:
                    audio = TTSAudioRawFrame(audio=item.pcm.tobytes(), sample_rate=item.rate, num_channels=1,
                                             context_id=self._contexts[0] if self._contexts else None)
                    await self.push_frame(audio)
            elif isinstance(item, AvatarVideo):
                h, w = item.rgb.shape[:2]
                image = OutputImageRawFrame(image=item.rgb.tobytes(), size=(w, h), format="RGB")
                image.sync_with_audio = self._sync
                image.metadata["lipstream"] = {"frame": item.frame, "opening": item.opening}
                await self.push_frame(image)
            elif isinstance(item, AvatarEvent):
                self.events.append(item.event)
                if item.event["type"] == "speech_ended":
                    if self._contexts:
                        self._contexts.popleft()
                    if self._held_stops:
                        await self.push_frame(self._held_stops.pop(0))
