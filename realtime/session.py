"""One peer: its speech timeline (mic or presenter queue) into its AudioFrontEnd, and back out.

Each session keeps a single 16 kHz *fed timeline*: every sample its ``AudioFrontEnd`` has heard,
numbered from 0 (since the start or the last interrupt).  Video frame ``k`` shows the speech at
``k / fps``, so the audio sent back with frame ``k`` is timeline samples ``[k*640, (k+1)*640)`` —
which is what keeps the returned sound on the lips.

Two sources feed the timeline:

- **mic** (video-call mode): Opus from the peer, resampled, pushed as it arrives.  If it is late
  or lost, the frame loop pushes silence in its place (the clock never stalls) and remembers the
  *debt*: the same amount of the late audio is discarded when it finally arrives, so the timeline
  never drifts behind real time.  The debt only accrues while the mic is flowing, and is capped.
- **presenter** (no mic): speech queued over HTTP, consumed in real time on the frame loop's tick,
  silence when the queue is empty.

Interrupt drops queued speech and restarts the timeline (``FrameLoop.reset``) so the next frame
is rendered from silence: the mouth closes within a frame or two.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from realtime.audio_frontend import AudioFrontEnd
from realtime.audio_io import Resampler
from realtime.clock import MediaClock
from realtime.mel import HOP, N_FFT, SAMPLE_RATE
from realtime.tracks import AvatarVideoTrack, DelayedAudioTrack
from realtime.windows import window_end

if TYPE_CHECKING:
    from aiortc import RTCPeerConnection

log = logging.getLogger(__name__)

__all__ = ["Session", "FrameMeta", "FrameTiming", "SpeechQueueFull"]

SLOT = SAMPLE_RATE // 50  # 20 ms: the unit arrival times are kept in


class SpeechQueueFull(RuntimeError):
    """More presenter speech queued than the session allows."""


@dataclass(frozen=True)
class FrameTiming:
    """What the frame loop measured for one frame (clock times and durations, seconds)."""

    planned_at: float  # the tick that put the frame in a batch
    infer_s: float  # the batch's engine call
    composite_s: float  # this frame's composite + idle motion + I420
    rendered_at: float  # back on the event loop, ready to send


@dataclass(frozen=True)
class FrameMeta:
    """Travels with a rendered frame to the video track: the server's latency stages come from it."""

    session_id: str
    frame: int
    heard_at: float  # clock time the speech at this frame's instant reached the front-end
    ready_at: float = 0.0  # ... and the last sample of its mel window (the lookahead) did
    timing: FrameTiming | None = None

    def stages(self, sent_at: float) -> dict[str, float]:
        """Audio-in -> frame-out split into consecutive stages (seconds; they sum to the total)."""
        if self.timing is None:
            return {}
        t = self.timing
        ready = min(max(self.ready_at, self.heard_at), t.planned_at)
        worker = t.rendered_at - t.planned_at
        return {"lookahead": ready - self.heard_at, "tick_wait": t.planned_at - ready,
                "inference": t.infer_s, "composite": t.composite_s,
                "worker_other": max(0.0, worker - t.infer_s - t.composite_s),
                "send_wait": sent_at - t.rendered_at}


@dataclass
class SessionStats:
    frames_rendered: int = 0
    frames_skipped: int = 0  # rendered late enough to be skipped in favour of a newer frame
    mic_samples: int = 0
    silence_filled: int = 0  # samples of silence pushed for late/lost mic audio
    late_discarded: int = 0  # samples of late mic audio discarded to repay the debt
    openings: deque = field(default_factory=lambda: deque(maxlen=500))  # effective mouth opening per frame


class Session:
    """State of one peer; all methods run on the event loop thread."""

    def __init__(self, session_id: str, avatar_name: str, rows: np.ndarray, clock: MediaClock,
                 video: AvatarVideoTrack, audio: DelayedAudioTrack, *, fps: float, lookahead_s: float,
                 late_s: float = 0.1, max_debt_s: float = 0.3, max_queue_s: float = 300.0,
                 history_s: float = 4.0, mouth_box: tuple[int, int, int, int] | None = None) -> None:
        self.id = session_id
        self.mouth_box = mouth_box
        self.avatar_name = avatar_name
        self.rows = rows
        self.clock = clock
        self.video = video
        self.audio = audio
        self.fps = fps
        self.spf = int(round(SAMPLE_RATE / fps))  # timeline samples per video frame
        self.front = AudioFrontEnd(fps=fps, lookahead_s=lookahead_s)
        self.pc: RTCPeerConnection | None = None
        self.has_mic = False
        self.stats = SessionStats()
        self.on_closed: Callable[[Session], None] | None = None
        self.max_catchup = 2  # video frames of speech sent at once after a skip
        self._lead = int(round((lookahead_s + 0.05) * SAMPLE_RATE))  # presenter: audio ahead of now
        self._late = int(late_s * SAMPLE_RATE)
        self._max_debt = int(max_debt_s * SAMPLE_RATE)
        self._max_queue = int(max_queue_s * SAMPLE_RATE)
        self._hist = np.zeros(int(history_s * SAMPLE_RATE) // SLOT * SLOT, np.float32)
        self._heard = np.zeros(self._hist.size // SLOT, np.float64)  # arrival time per 20 ms slot
        self._queue: deque[np.ndarray] = deque()
        self._queued = 0
        self._mic_task: asyncio.Task | None = None
        self._last_mic = -1e9
        self.closed = False
        self.restart()

    # -- the timeline -----------------------------------------------------------------------
    def restart(self) -> None:
        """Start the timeline afresh at sample 0 = now (session start, interrupt)."""
        self.front.reset()
        self.origin = self.clock.now()
        self.fed = 0
        self.delivered = 0  # timeline samples handed to the audio track
        self._debt = 0

    def _push(self, x: np.ndarray, heard_at: float) -> None:
        if x.size == 0:
            return
        self.front.push(x)
        idx = (self.fed + np.arange(x.size)) % self._hist.size
        self._hist[idx] = x
        first, last = self.fed // SLOT, (self.fed + x.size - 1) // SLOT
        self._heard[np.arange(first, last + 1) % self._heard.size] = heard_at
        self.fed += x.size

    def feed(self, now: float) -> None:
        """Frame-loop tick: bring the timeline up to ``now`` (presenter speech or silence fill)."""
        if self.has_mic:
            due = int((now - self.origin) * SAMPLE_RATE) - self._late
            gap = due - self.fed
            if gap > 0:
                if now - self._last_mic < 0.5:  # the mic is flowing: this audio is late, not absent
                    self._debt = min(self._debt + gap, self._max_debt)
                self.stats.silence_filled += gap
                self._push(np.zeros(gap, np.float32), now)
            return
        gap = int((now - self.origin) * SAMPLE_RATE) + self._lead - self.fed
        while gap > 0:
            if not self._queue:
                self._push(np.zeros(gap, np.float32), now)
                return
            head = self._queue[0]
            take = head[:gap]
            if take.size == head.size:
                self._queue.popleft()
            else:
                self._queue[0] = head[gap:]
            self._queued -= take.size
            self._push(take, now)
            gap -= take.size

    def on_mic_audio(self, samples16k: np.ndarray) -> None:
        """Mic audio arrived (already 16 kHz mono): repay any silence debt, push the rest."""
        now = self.clock.now()
        if now - self._last_mic > 0.5:
            # first packet, or the mic resumed after a pause: anchor the fill line ``late_s``
            # behind the mic, so only a stall longer than that is filled with silence
            self.origin = now - self.fed / SAMPLE_RATE
        self._last_mic = now
        self.stats.mic_samples += samples16k.size
        if self._debt:
            n = min(self._debt, samples16k.size)
            self._debt -= n
            self.stats.late_discarded += n
            samples16k = samples16k[n:]
        self._push(samples16k, now)

    def audio_of_frames(self, start: int, stop: int) -> np.ndarray:
        """Timeline samples of video frames ``[start, stop)`` (silence where no longer kept)."""
        a, b = start * self.spf, stop * self.spf
        out = np.zeros(b - a, np.float32)
        lo = max(a, self.fed - self._hist.size)
        hi = min(b, self.fed)
        if hi > lo:
            out[lo - a:hi - a] = self._hist[np.arange(lo, hi) % self._hist.size]
        return out

    def heard_at(self, frame: int) -> float:
        """When the speech at frame ``frame``'s instant entered the front-end."""
        return float(self._heard[(frame * self.spf // SLOT) % self._heard.size])

    # -- rendered frames --------------------------------------------------------------------
    def ready_at(self, frame: int) -> float:
        """When the last sample of frame ``frame``'s mel window entered the front-end."""
        # mel frame j is complete once j * HOP + N_FFT / 2 samples are in (centred STFT)
        last = (window_end(frame, self.fps, self.front.lookahead_s) - 1) * HOP + N_FFT // 2 - 1
        if last >= self.fed:
            return self.clock.now()
        return float(self._heard[(last // SLOT) % self._heard.size])

    def on_frame(self, frame: int, planes: np.ndarray, params: np.ndarray,
                 timing: FrameTiming | None = None) -> None:
        """A rendered frame is ready: send its speech (and any skipped frames' speech) and the frame."""
        # speech of frames skipped since the last one goes out too, but never more than
        # ``max_catchup`` frames' worth: older audio (e.g. before the peer connected) would only
        # sit in the audio track's queue and put the sound behind the lips for good
        first = max(self.delivered // self.spf, frame + 1 - self.max_catchup)
        if frame + 1 > first:
            self.audio.deliver(self.audio_of_frames(first, frame + 1))
            self.delivered = (frame + 1) * self.spf
        self.video.deliver(planes, FrameMeta(self.id, frame, self.heard_at(frame), self.ready_at(frame), timing))
        self.stats.frames_rendered += 1
        opening = float(params[0]) * (1.0 - float(params[2])) if params.size >= 3 else float(params[0])
        self.stats.openings.append(opening)

    # -- presenter speech -------------------------------------------------------------------
    def speak(self, samples16k: np.ndarray) -> float:
        """Queue speech; returns the seconds queued in all (including this)."""
        if self._queued + samples16k.size > self._max_queue:
            raise SpeechQueueFull(f"at most {self._max_queue / SAMPLE_RATE:.0f} s of speech may be queued")
        self._queue.append(np.asarray(samples16k, np.float32))
        self._queued += samples16k.size
        return self._queued / SAMPLE_RATE

    @property
    def queued_s(self) -> float:
        return self._queued / SAMPLE_RATE

    def drop_speech(self) -> None:
        """Interrupt, this session's half: forget queued speech and the speech waiting to be sent."""
        self._queue.clear()
        self._queued = 0
        self.audio.clear()

    # -- the mic ----------------------------------------------------------------------------
    def attach_mic(self, track: MediaStreamTrack) -> None:
        self.has_mic = True
        self._mic_task = asyncio.ensure_future(self._consume_mic(track))

    async def _consume_mic(self, track: MediaStreamTrack) -> None:
        resampler = Resampler()
        try:
            while True:
                frame = await track.recv()
                self.on_mic_audio(resampler.push_frame(frame))
        except MediaStreamError:
            log.debug("session %s: mic ended", self.id)

    # -- the end ----------------------------------------------------------------------------
    async def close(self) -> None:
        """Idempotent: stop the mic consumer, the tracks and the peer connection."""
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
        return {
            "session_id": self.id, "avatar": self.avatar_name, "mic": self.has_mic,
            "mouth_box": list(self.mouth_box) if self.mouth_box else None,
            "frames_sent": self.video.frames_sent, "frames_repeated": self.video.frames_repeated,
            "frames_rendered": self.stats.frames_rendered, "frames_skipped": self.stats.frames_skipped,
            "timeline_s": self.fed / SAMPLE_RATE, "queued_s": self.queued_s,
            "mic_s": self.stats.mic_samples / SAMPLE_RATE,
            "silence_filled_s": self.stats.silence_filled / SAMPLE_RATE,
            "audio_backlog_s": self.audio.backlog_s,
            "openings": [round(v, 4) for v in self.stats.openings],
        }
