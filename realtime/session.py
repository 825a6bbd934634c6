"""One peer: its speech timeline, the source that fills it, and the sinks its frames go out to.

A session is a :class:`~realtime.timeline.Timeline` plus one source (a
:class:`~realtime.sources.MicSource` once the peer sends a mic track, else a
:class:`~realtime.sources.PresenterSource`) plus a video and an audio sink (the WebRTC tracks, or
the MP4 writer of ``render``).  The frame step owns *when* things happen: it calls :meth:`feed`
on every tick, :meth:`restart` for an interrupt, and :meth:`on_frame` when a frame is rendered.
All methods run on the event loop thread (or, offline, the one thread of ``render``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np

from engines.audio_convention import AudioConvention
from realtime.clock import MediaClock
from realtime.frame_meta import FrameMeta, FrameTiming
from realtime.sources import MicSource, PresenterSource, SpeechQueueFull
from realtime.timeline import Timeline

if TYPE_CHECKING:
    from aiortc import RTCPeerConnection
    from aiortc.mediastreams import MediaStreamTrack

log = logging.getLogger(__name__)

__all__ = ["Session", "SpeechQueueFull", "VideoSink", "AudioSink"]


_RTP_WRAP = 2 ** 32


def lost_samples(expected: int | None, frame) -> int:  # noqa: ANN001 - av.AudioFrame
    """Samples missing before ``frame`` given the pts the next frame should have had: a gap in
    the RTP timestamps is packets lost on the way (aiortc's jitter buffer skips them).  A jump
    back (reordered, duplicated) or over half a second (the peer paused its mic: the mic source
    re-anchors) counts as none."""
    if expected is None or frame.pts is None:
        return 0
    gap = (frame.pts - expected) % _RTP_WRAP
    samples = int(round(float(gap * frame.time_base) * frame.sample_rate)) if frame.time_base else gap
    return samples if 0 < samples <= frame.sample_rate // 2 else 0


class VideoSink(Protocol):
    frames_sent: int
    frames_repeated: int

    def deliver(self, planes: np.ndarray, meta: object = None) -> None: ...
    def stop(self) -> None: ...


class AudioSink(Protocol):
    backlog_s: float

    def deliver(self, samples16k: np.ndarray) -> None: ...
    def clear(self) -> None: ...
    def stop(self) -> None: ...


@dataclass
class SessionStats:
    frames_rendered: int = 0
    frames_skipped: int = 0  # rendered late enough to be skipped in favour of a newer frame
    openings: deque = field(default_factory=lambda: deque(maxlen=500))  # effective mouth opening per frame


class Session:
    def __init__(self, session_id: str, avatar_name: str, rows: np.ndarray, clock: MediaClock,
                 video: VideoSink, audio: AudioSink, convention: AudioConvention, *,
                 max_queue_s: float = 300.0, history_s: float = 4.0,
                 mouth_box: tuple[int, int, int, int] | None = None) -> None:
        self.id = session_id
        self.avatar_name = avatar_name
        self.rows = rows
        self.mouth_box = mouth_box
        self.clock = clock
        self.video = video
        self.audio = audio
        self.timeline = Timeline(convention, history_s=history_s)
        self.timeline.restart(clock.now())
        self.source: MicSource | PresenterSource = PresenterSource(
            lead_s=convention.lookahead_s + 0.05, max_queue_s=max_queue_s, sample_rate=convention.sample_rate)
        self.pc: RTCPeerConnection | None = None
        self.stats = SessionStats()
        self.on_closed: Callable[[Session], None] | None = None
        self.on_heard: Callable[[], None] | None = None  # mic audio was pushed (the frame loop may render)
        self.mic_heard_at: float | None = None  # clock time the mic last delivered audio (realtime/reaper.py)
        self.mic_lost_s = 0.0  # mic audio lost on the way (gaps in its RTP timestamps), filled with silence
        self.max_catchup = 2  # video frames of speech sent at once after a skip
        self.closed = False
        self._mic_task: asyncio.Task | None = None

    @property
    def front(self):  # noqa: ANN201 - the timeline's AudioFrontEnd, what the scheduler reads
        return self.timeline.front

    @property
    def has_mic(self) -> bool:
        return isinstance(self.source, MicSource)

    # -- driven by the frame step ------------------------------------------------------------
    def feed(self, now: float) -> None:
        """Tick: bring the timeline up to ``now`` (speech, or silence in place of late audio)."""
        self.source.fill(self.timeline, now)

    def restart(self) -> None:
        """Interrupt: drop queued and unsent speech; the timeline starts again from silence, now."""
        self.source.restart()
        self.audio.clear()
        self.timeline.restart(self.clock.now())

    def on_frame(self, frame: int, planes: np.ndarray, params: np.ndarray,
                 timing: FrameTiming | None = None) -> None:
        """A rendered frame: send its speech (and any skipped frames', capped) and the frame."""
        tl = self.timeline
        speech = tl.take_audio_until(frame, self.max_catchup)
        if speech is not None:
            self.audio.deliver(speech)
        now = self.clock.now()
        self.video.deliver(planes, FrameMeta(self.id, frame, tl.heard_at(frame), tl.ready_at(frame, now), timing))
        self.stats.frames_rendered += 1
        opening = float(params[0]) * (1.0 - float(params[2])) if params.size >= 3 else float(params[0])
        self.stats.openings.append(opening)

    # -- sources -----------------------------------------------------------------------------
    def speak(self, samples16k: np.ndarray) -> float:
        """Queue presenter speech; returns the seconds queued in all. SpeechQueueFull past the cap."""
        if not isinstance(self.source, PresenterSource):
            raise TypeError("this session is driven by its microphone")
        return self.source.speak(samples16k)

    def on_mic_audio(self, samples16k: np.ndarray) -> None:
        """Mic audio arrived (already 16 kHz mono)."""
        if not isinstance(self.source, MicSource):
            self.source = MicSource(sample_rate=self.timeline.sample_rate)
        self.mic_heard_at = self.clock.now()
        self.source.on_audio(self.timeline, samples16k, self.mic_heard_at)
        if self.on_heard is not None:
            self.on_heard()

    def attach_mic(self, track: MediaStreamTrack) -> None:
        self.source = MicSource(sample_rate=self.timeline.sample_rate)
        self.mic_heard_at = self.clock.now()  # the silence timeout counts from here until audio comes
        self._mic_task = asyncio.ensure_future(self._consume_mic(track))

    async def _consume_mic(self, track: MediaStreamTrack) -> None:
        from aiortc.mediastreams import MediaStreamError

        from realtime.audio_io import Resampler

        resampler = Resampler()
        expected: int | None = None  # the next frame's pts (RTP timestamp) if none is lost
        try:
            while True:
                frame = await track.recv()
                lost = lost_samples(expected, frame)
                if lost:  # silence in place of lost packets, so what follows stays on time
                    self.mic_lost_s += lost / frame.sample_rate
                    self.on_mic_audio(resampler.push(np.zeros(lost, np.int16), frame.sample_rate))
                expected = None if frame.pts is None else (frame.pts + frame.samples) % _RTP_WRAP
                self.on_mic_audio(resampler.push_frame(frame))
        except MediaStreamError:
            log.debug("session %s: mic ended", self.id)

    # -- the end -----------------------------------------------------------------------------
    async def close(self) -> None:
        """Idempotent: stop the mic consumer, the sinks and the peer connection."""
        if self.closed:
            return
        self.closed = True
        if self._mic_task is not None:
            self._mic_task.cancel()
            await asyncio.gather(self._mic_task, return_exceptions=True)
        self.video.stop()
        self.audio.stop()
        if self.pc is not None:
            await self.pc.close()
        if self.on_closed is not None:
            self.on_closed(self)

    def summary(self) -> dict:
        """What ``GET /api/sessions/{id}`` shows (debugging and tests)."""
        src = self.source.stats
        rate = self.timeline.sample_rate
        return {
            "session_id": self.id, "avatar": self.avatar_name, "mic": self.has_mic,
            "mouth_box": list(self.mouth_box) if self.mouth_box else None,
            "frames_sent": self.video.frames_sent, "frames_repeated": self.video.frames_repeated,
            "frames_rendered": self.stats.frames_rendered, "frames_skipped": self.stats.frames_skipped,
            "timeline_s": self.timeline.fed / rate, "queued_s": self.source.queued_s,
            "mic_s": src.mic_samples / rate, "silence_filled_s": src.silence_filled / rate,
            "mic_lost_s": round(self.mic_lost_s, 3),
            "audio_backlog_s": self.audio.backlog_s,
            "openings": [round(v, 4) for v in self.stats.openings],
        }
