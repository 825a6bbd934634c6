"""The transport-free core of streamed speech: PCM pushed into a presenter session, and the events
that say what became of it (``speech_started`` / ``speech_ended`` / ``interrupted``, back-pressure).

The WebSocket route (``realtime/stream_api.py``) and the in-process agent integrations
(``realtime/integrations``) share it.  Segment timing comes from frame delivery: the session's audio
sink is wrapped in a tap that sees every block of speech handed to the tracks with its video frame,
and the presenter source reports where each segment's first and last sample landed on the timeline.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from realtime.audio_io import Resampler
from realtime.sources import PresenterSource, SpeechQueueFull

if TYPE_CHECKING:
    from realtime.session import AudioSink, Session

log = logging.getLogger(__name__)

__all__ = ["SpeechStream", "StreamError", "RATES", "DEFAULT_MAX_BUFFER_S"]

RATES = (16000, 24000, 48000)
DEFAULT_MAX_BUFFER_S = 3.0


class StreamError(ValueError):
    """Input the stream cannot use (odd-length PCM, ...): reported to the sender, never fatal."""


@dataclass
class _Segment:
    id: int
    first_in_at: float  # clock time the segment's first audio arrived
    received: int = 0  # 16 kHz samples queued
    marked: bool = False  # its start mark is in the source (with its first 16 kHz sample)
    start_tl: int | None = None  # timeline index of its first sample, once in the timeline
    end_tl: int | None = None  # ... just past its last sample, once flushed and in the timeline
    started_at: float | None = None  # clock time its first sample was handed to the tracks
    flushed: bool = False
    original: list[np.ndarray] | None = None  # the speech as sent (int16 at the stream's rate), if kept
    original_off: int = 0  # samples of it already replayed and forgotten


class _DeliveryTap:
    """The session's audio sink, wrapped: every block of speech handed to the track (with its
    video frame) and every clear (an interrupt being applied) is reported to the stream."""

    def __init__(self, inner: AudioSink, stream: SpeechStream) -> None:
        self.inner = inner
        self.stream = stream

    @property
    def backlog_s(self) -> float:
        return self.inner.backlog_s

    def deliver(self, samples16k: np.ndarray) -> None:
        self.inner.deliver(samples16k)
        self.stream._on_delivered(samples16k.size)

    def clear(self) -> None:
        self.stream._on_restart()  # before the timeline restarts: it still holds what was played
        self.inner.clear()

    def stop(self) -> None:
        self.inner.stop()


class SpeechStream:
    """Streamed speech into one presenter session; events about it from the frames delivered.

    ``interrupt()`` must post the frame loop's ``Interrupt`` event for the session (the server
    passes ``SessionRegistry.interrupt``); ``on_event(dict)`` receives the events, synchronously,
    on the event loop (or the one thread that drives the frame step).
    """

    def __init__(self, session: Session, *, interrupt: Callable[[], None], on_event: Callable[[dict], None],
                 rate: int = 16000, max_buffer_s: float = DEFAULT_MAX_BUFFER_S,
                 on_audio: Callable[[np.ndarray, bool], None] | None = None) -> None:
        """``on_audio(pcm, speech)``, if given, receives with every block of speech delivered the
        same stretch of the audio *as it was sent* (int16 at ``rate``; zeros outside segments;
        ``speech`` False when the block holds no segment audio), for sinks that replay the
        sender's own audio in step with the frames rather than the 16 kHz timeline."""
        if not isinstance(session.source, PresenterSource):
            raise TypeError("streamed speech is for presenter sessions (this one has a microphone)")
        if rate not in RATES:
            raise ValueError(f"rate must be one of {', '.join(map(str, RATES))} Hz, got {rate}")
        self.session = session
        self.source: PresenterSource = session.source
        self.rate = rate
        self.max_buffer_s = max_buffer_s
        self._interrupt = interrupt
        self._emit = on_event
        self._on_audio = on_audio
        self._clock = session.clock
        self._tl_rate = session.timeline.sample_rate
        self._opened_at = self._clock.now()
        self._resampler = Resampler(out_rate=self._tl_rate)
        self._open: _Segment | None = None  # receiving audio (not flushed yet)
        self._segments: deque[_Segment] = deque()  # queued or playing, in timeline order
        self._next_id = 1
        self._deliveries: deque[tuple[int, float]] = deque(maxlen=1500)  # (timeline end, clock time): 60 s
        self._delivered = 0
        self._pending_clear = False
        self._held: list[tuple[str, Any]] = []  # input after a clear, replayed once it is applied
        self._paused = False
        self._dropped = 0  # input samples dropped while the buffer was full (this episode)
        self.closed = False
        self._tap = _DeliveryTap(session.audio, self)
        session.audio = self._tap
        self.source.on_mark = self._on_mark

    @property
    def clear_pending(self) -> bool:
        """A clear was sent and the frame loop has not applied it yet (frames delivered meanwhile
        still carry the old speech)."""
        return self._pending_clear

    # -- input ------------------------------------------------------------------------------
    def push_pcm16(self, data: bytes) -> None:
        """A binary message: PCM16 LE mono at ``rate``.  StreamError for an odd byte count."""
        if len(data) % 2:
            raise StreamError(f"binary messages are 16-bit PCM: {len(data)} bytes is not a whole number of samples")
        if data:
            self.push(np.frombuffer(data, "<i2"))

    def push(self, samples: np.ndarray, rate: int | None = None) -> None:
        """Queue speech (int16 or float samples, mono, at ``rate``, default the stream's)."""
        rate = rate or self.rate
        if self._pending_clear:
            self._held.append(("audio", (samples, rate)))
            return
        samples = np.asarray(samples)
        if samples.size == 0:
            return
        if self.queued_s >= self.max_buffer_s:
            if not self._dropped:  # once per episode; 'resume' reports the total
                self._emit({"type": "error", "error": "the buffer is full: audio dropped (pause on 'backpressure' "
                                                      "until 'resume')", "dropped_s": round(samples.size / rate, 3)})
            self._dropped += samples.size * self.rate // rate
            return
        if self._open is None:
            self._open = _Segment(self._next_id, self._clock.now(), original=[] if self._on_audio else None)
            self._next_id += 1
            self._segments.append(self._open)
        if self._open.original is not None:
            self._open.original.append(self._as_sent(samples, rate))
        self._queue(self._resampler.push(samples, rate))

    def _as_sent(self, samples: np.ndarray, rate: int) -> np.ndarray:
        """``samples`` as int16 at the stream's rate (what ``on_audio`` replays)."""
        if samples.dtype != np.int16:
            samples = (np.clip(np.asarray(samples, np.float32), -1, 1) * 32767).astype(np.int16)
        if rate != self.rate:
            import soxr

            samples = soxr.resample(samples, rate, self.rate)
        return samples

    def flush(self) -> None:
        """End of segment: its speech is complete; ``speech_ended`` follows once it has played."""
        if self._pending_clear:
            self._held.append(("flush", None))
            return
        self._queue(self._resampler.flush())
        seg, self._open = self._open, None
        if seg is None:
            return  # no audio since the last flush: nothing to end
        if not seg.marked:  # no sample ever reached the queue (all dropped)
            self._segments.remove(seg)
            return
        seg.flushed = True
        self.source.mark_end(("end", seg.id))
        self._advance()

    def clear(self) -> None:
        """Interrupt: drop queued and unplayed speech (applied by the frame loop at its next tick;
        input that arrives meanwhile is held and queued after it)."""
        self._pending_clear = True
        self._held.clear()
        self._resampler.flush()
        self._open = None
        self._interrupt()

    def _queue(self, y: np.ndarray) -> None:
        seg = self._open
        if y.size == 0 or seg is None:
            return
        if not seg.marked:
            seg.marked = True
            self.source.mark_start(("start", seg.id))
        try:
            self.source.speak(y)
        except SpeechQueueFull as exc:
            self._emit({"type": "error", "error": str(exc)})
            return
        seg.received += y.size
        if not self._paused and self.queued_s >= self.max_buffer_s:
            self._paused = True
            self._emit({"type": "backpressure", "queued_s": round(self.queued_s, 3), "max_buffer_s": self.max_buffer_s})

    @property
    def queued_s(self) -> float:
        """Speech received and not yet in the timeline (the bounded buffer), seconds."""
        held = sum(np.asarray(a[0]).size / a[1] for kind, a in self._held if kind == "audio")
        return self.source.queued_s + held

    # -- what the frame step reports ----------------------------------------------------------
    def _on_mark(self, label: tuple[str, int], tl: int) -> None:
        kind, sid = label
        for seg in self._segments:
            if seg.id == sid:
                if kind == "start":
                    seg.start_tl = tl
                else:
                    seg.end_tl = tl
                break
        self._advance()

    def _on_delivered(self, n: int) -> None:
        self._delivered = self.session.timeline.delivered
        self._deliveries.append((self._delivered, self._clock.now()))
        if self._on_audio is not None:
            self._pair_audio(self._delivered - n, self._delivered)
        self._advance()
        if self._paused and self.queued_s < self.max_buffer_s / 2:
            self._paused = False
            self._emit({"type": "resume", "queued_s": round(self.queued_s, 3),
                        "dropped_s": round(self._dropped / self._tl_rate, 3)})
            self._dropped = 0

    def _pair_audio(self, a: int, b: int) -> None:
        """The sent audio of timeline samples ``[a, b)``, at the stream's rate, to ``on_audio``."""
        r = self.rate / self._tl_rate
        out = np.zeros(round(b * r) - round(a * r), np.int16)
        speech = False
        for seg in self._segments:
            if seg.start_tl is None or seg.original is None:
                break
            end = seg.end_tl if seg.end_tl is not None else seg.start_tl + seg.received
            x, y = max(a, seg.start_tl), min(b, end)
            if y <= x:
                if seg.start_tl >= b:
                    break
                continue
            if len(seg.original) > 1:
                seg.original[:] = [np.concatenate(seg.original)]
            src = seg.original[0] if seg.original else np.zeros(0, np.int16)
            off = seg.original_off
            i0 = max(round((x - seg.start_tl) * r), off)
            i1 = min(round((y - seg.start_tl) * r), off + src.size)
            o = round(x * r) - round(a * r)
            if i1 > i0:
                n = min(i1 - i0, out.size - o)
                out[o:o + n] = src[i0 - off:i0 - off + n]
                speech = True
                seg.original[:] = [src[i0 - off + n:]]  # replayed: forget it
                seg.original_off = i0 + n
        self._on_audio(out, speech)

    def _delivered_at(self, index: int) -> float | None:
        """When the frame holding timeline sample ``index`` was handed to the tracks, if it was
        (the oldest delivery remembered, for a sample older than the last 60 s)."""
        if not self._deliveries or self._deliveries[-1][0] <= index:
            return None
        found = self._deliveries[0][1]
        for end, t in reversed(self._deliveries):
            if end <= index:
                break
            found = t
        return found

    def _advance(self) -> None:
        while self._segments:
            seg = self._segments[0]
            if seg.started_at is None:
                at = self._delivered_at(seg.start_tl) if seg.start_tl is not None else None
                if at is None:
                    return
                seg.started_at = at
                self._emit({"type": "speech_started", "segment": seg.id, "at_s": round(at - self._opened_at, 4),
                            "latency_s": round(at - seg.first_in_at, 4)})
            at = self._delivered_at(seg.end_tl - 1) if seg.flushed and seg.end_tl is not None else None
            if at is None:
                return
            self._segments.popleft()
            self._emit({"type": "speech_ended", "segment": seg.id, "at_s": round(at - self._opened_at, 4),
                        "played_s": round((seg.end_tl - seg.start_tl) / self._tl_rate, 4),
                        "audio_s": round(seg.received / self._tl_rate, 4),
                        "wall_s": round(at - seg.started_at, 4)})

    def _on_restart(self) -> None:
        """An interrupt is being applied (by this stream's clear or any other): report what of the
        current segment was played, forget the rest, then queue what arrived after the clear."""
        now = self._clock.now()
        playing = next(iter(self._segments), None)
        played = 0
        if playing is not None and playing.start_tl is not None and playing.started_at is not None:
            played = max(0, min(self._delivered, playing.end_tl or self._delivered) - playing.start_tl)
        dropped = sum(s.received for s in self._segments) - played
        self._emit({"type": "interrupted", "segment": playing.id if playing else None,
                    "at_s": round(now - self._opened_at, 4), "played_s": round(played / self._tl_rate, 4),
                    "dropped_s": round(max(0, dropped) / self._tl_rate, 4),
                    "segments": [s.id for s in self._segments]})
        self._segments.clear()
        self._open = None
        self._deliveries.clear()
        self._delivered = 0
        self._paused = False
        self._pending_clear = False
        held, self._held = self._held, []
        # the source forgot its queue and marks already (Session.restart); the timeline restarts next
        for kind, arg in held:
            if kind == "audio":
                self.push(*arg)
            else:
                self.flush()

    def close(self) -> None:
        """Detach from the session (idempotent).  Speech already queued still plays."""
        if self.closed:
            return
        self.closed = True
        if self.session.audio is self._tap:
            self.session.audio = self._tap.inner
        if self.source.on_mark == self._on_mark:
            self.source.on_mark = None


# -- the WebSocket route ----------------------------------------------------------------------
