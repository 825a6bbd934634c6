"""The two outgoing WebRTC tracks of a session: 25 fps avatar video and the delayed speech.

aiortc calls ``recv()`` back to back and does not pace, so each track sleeps to the shared
:class:`~realtime.clock.TickGrid` itself.  Frames and audio are *delivered* to the tracks by the
frame loop at the moment a frame is made; a track sends what it was given as soon as its grid
slot has come, and if nothing fresh arrives within ``wait_s`` of the slot the video repeats its
last frame (counted as a drop) and the audio sends silence.  Because the speech of frame ``k`` is
delivered together with frame ``k``, sound and lips leave the server together by construction:
the returned audio is delayed by exactly the pipeline's delay D, whatever D turns out to be.

Video pts are ``k * 3600`` at time base 1/90000 (k = grid ticks since the track's first frame);
audio is 20 ms frames of 48 kHz mono s16, pts in samples.
"""

from __future__ import annotations

import asyncio
import fractions
import math
from collections import deque
from typing import Callable

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from realtime.audio_io import Resampler
from realtime.clock import MediaClock, TickGrid, wait_event_until

__all__ = ["AvatarVideoTrack", "DelayedAudioTrack", "VIDEO_TIME_BASE", "AUDIO_RATE"]

VIDEO_CLOCK = 90000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)
AUDIO_RATE = 48000
AUDIO_PTIME = 0.02
AUDIO_CHUNK = int(AUDIO_RATE * AUDIO_PTIME)  # 960 samples per 20 ms frame
AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_RATE)


class AvatarVideoTrack(MediaStreamTrack):
    """25 fps video whose frames the frame loop delivers; repeats the last one when none came.

    ``on_sent(meta, repeated)`` is called for every frame handed to the encoder: ``meta`` is what
    came with a fresh frame (the server measures audio-in -> frame-out latency from it), None for a
    repeat; ``repeated`` is True when a real frame was due and none came (a drop).
    """

    kind = "video"

    def __init__(self, clock: MediaClock, grid: TickGrid, placeholder: np.ndarray, *,
                 wait_s: float = 0.035, lead_s: float = 0.03,
                 on_sent: Callable[[object, bool], None] | None = None) -> None:
        super().__init__()
        self._clock = clock
        self._grid = grid
        self._fps = grid.fps
        self._pts_step = int(round(VIDEO_CLOCK / grid.fps))
        self._wait_s = wait_s
        # A frame may go out as soon as it is delivered from ``lead_s`` before its slot on.  With
        # a fixed slot the track could settle one slot out of phase with the frame loop (every
        # frame delivered just after a slot waited ~35 ms for the next; seen as +32 ms send_wait
        # and, since the receiver syncs A/V by send time, lips 40 ms later against the sound).
        self._lead_s = lead_s
        self._on_sent = on_sent
        self._latest = placeholder  # (H * 3 / 2, W) uint8 I420 planes
        self._meta: object = None
        self._fresh = asyncio.Event()
        self._started = False  # a real frame has been delivered: from then on a repeat is a drop
        self._t0: float | None = None
        self._k = 0
        self.frames_sent = 0
        self.frames_repeated = 0

    def deliver(self, planes: np.ndarray, meta: object = None) -> None:
        """Newest frame wins: a frame not yet sent when the next arrives is replaced (and lost)."""
        self._latest = planes
        self._meta = meta
        self._started = True
        self._fresh.set()

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = self._clock.now()
        if self._t0 is None:
            self._t0 = self._grid.next_tick(now)
        # a slow consumer (encoder stall) skips slots rather than drifting behind real time
        self._k = max(self._k, math.floor((now - self._t0) * self._fps))
        slot = self._t0 + self._k / self._fps
        await self._clock.sleep_until(slot - self._lead_s)
        fresh = await wait_event_until(self._clock, self._fresh, slot + self._wait_s)
        if self.readyState != "live":
            raise MediaStreamError
        self._fresh.clear()
        meta, self._meta = (self._meta, None) if fresh else (None, self._meta)
        repeated = not fresh and self._started
        self.frames_repeated += repeated
        if self._on_sent is not None:
            self._on_sent(meta, repeated)
        frame = av.VideoFrame.from_ndarray(self._latest, format="yuv420p")
        frame.pts = self._k * self._pts_step
        frame.time_base = VIDEO_TIME_BASE
        self._k += 1
        self.frames_sent += 1
        return frame


class DelayedAudioTrack(MediaStreamTrack):
    """The session's speech, 16 kHz in, sent as 20 ms 48 kHz frames in step with the video.

    A bounded FIFO: backlog beyond ``max_backlog_s`` drops its oldest audio (latency stays
    bounded if the receiver side ever stalls); an empty FIFO sends silence.

    Speech that has waited in the FIFO longer than ``max_age_s`` is dropped when its slot comes
    (``samples_late``).  Frame k's speech is delivered with frame k and should leave with it
    (within one 20 ms packet); it can only get older than that when this track had to send
    silence in its place (a late frame, a catch-up of two frames' speech at once).  Sent late, it
    would stay late: the FIFO drains at exactly real time, so every stall added its length to the
    delay of all later speech, and the sound drifted behind the lips over a long call (the
    10-minute soak's "+2.65 ms/min": one early stall left it ~37 ms behind for the rest of it).
    """

    kind = "audio"

    def __init__(self, clock: MediaClock, grid: TickGrid, *, wait_s: float = 0.035,
                 max_backlog_s: float = 0.12, max_age_s: float = 0.05, quality: str = "LQ") -> None:
        super().__init__()
        self._clock = clock
        self._grid = grid
        self._wait_s = wait_s
        self._cap = int(max_backlog_s * AUDIO_RATE)
        self._max_age = max_age_s
        self._fifo = np.zeros(0, np.int16)
        self._out = 0  # samples ever taken off the FIFO's head (sent or dropped)
        self._ages: deque[tuple[int, float]] = deque()  # (end index of a delivery, when it came)
        self._ready = asyncio.Event()
        self._upsample = Resampler(out_rate=AUDIO_RATE, quality=quality)
        self._t0: float | None = None
        self._j = 0
        self.samples_dropped = 0  # over max_backlog_s
        self.samples_late = 0  # older than max_age_s when their slot came

    def deliver(self, samples16k: np.ndarray) -> None:
        """Queue 16 kHz mono float32 speech (one video frame's worth at a time)."""
        up = self._upsample.push(samples16k, 16000)
        if up.size == 0:
            return
        pcm = (np.clip(up, -1.0, 1.0) * 32767.0).astype(np.int16)
        fifo = np.concatenate([self._fifo, pcm])
        self._ages.append((self._out + fifo.size, self._clock.now()))
        if fifo.size > self._cap:
            self.samples_dropped += fifo.size - self._cap
            self._out += fifo.size - self._cap
            fifo = fifo[-self._cap:]
        self._fifo = fifo
        if self._fifo.size >= AUDIO_CHUNK:
            self._ready.set()

    def clear(self) -> None:
        """Interrupt: forget queued speech (the resampler's filter tail too)."""
        self._out += self._fifo.size
        self._fifo = np.zeros(0, np.int16)
        self._ages.clear()
        self._upsample.flush()
        self._ready.clear()

    @property
    def backlog_s(self) -> float:
        return self._fifo.size / AUDIO_RATE

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = self._clock.now()
        if self._t0 is None:
            self._t0 = self._grid.next_tick(now)
        self._j = max(self._j, math.floor((now - self._t0) / AUDIO_PTIME))
        slot = self._t0 + self._j * AUDIO_PTIME
        await self._clock.sleep_until(slot)
        if self._fifo.size < AUDIO_CHUNK:
            self._ready.clear()
            await wait_event_until(self._clock, self._ready, slot + self._wait_s)
        if self.readyState != "live":
            raise MediaStreamError
        self._drop_stale(self._clock.now())
        pcm = np.zeros(AUDIO_CHUNK, np.int16)
        n = min(AUDIO_CHUNK, self._fifo.size)
        pcm[:n] = self._fifo[:n]
        self._fifo = self._fifo[n:]
        self._out += n
        frame = av.AudioFrame.from_ndarray(pcm[None, :], format="s16", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = self._j * AUDIO_CHUNK
        frame.time_base = AUDIO_TIME_BASE
        self._j += 1
        return frame

    def _drop_stale(self, now: float) -> None:
        """Drop the deliveries (or their unsent rest) that came more than ``max_age_s`` ago."""
        ages = self._ages
        while ages and ages[0][0] <= self._out:
            ages.popleft()
        stale_end = self._out
        while ages and now - ages[0][1] > self._max_age:
            stale_end = ages.popleft()[0]
        n = min(stale_end - self._out, self._fifo.size)
        if n > 0:
            self._fifo = self._fifo[n:]
            self._out += n
            self.samples_late += n
