"""Where a session's speech comes from: a peer's microphone, or speech queued by a presenter/bot.

Both fill the session's :class:`~realtime.timeline.Timeline`; the frame step calls ``fill`` on
every tick so no timeline falls behind the clock, whatever its source does.

- :class:`MicSource` (video-call mode): audio pushed as it arrives.  If it is late or lost the
  tick fills silence in its place (the clock never stalls) and remembers the *debt*: the same
  amount of late audio is discarded when it finally arrives (as far as it would put the
  timeline ahead of real time), so the timeline never drifts behind real time.  The debt only
  accrues while the mic is flowing, and is capped.  Packets known to be lost (a gap in the RTP
  timestamps) are filled with silence by the session as soon as the next packet comes.
- :class:`PresenterSource` (no mic): queued speech consumed in real time, ``lead`` seconds ahead
  of the clock (the model's lookahead plus a margin), silence when the queue is empty.  *Marks*
  label boundaries in the queued speech (a streamed segment's first and last sample); each is
  reported with its timeline position once the speech reaches the timeline, so whoever streams
  can tell from the frames actually delivered when a segment started and ended playing.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Hashable

import numpy as np

from realtime.timeline import Timeline

__all__ = ["MicSource", "PresenterSource", "SpeechQueueFull", "SourceStats"]


class SpeechQueueFull(RuntimeError):
    """More presenter speech queued than the session allows."""


@dataclass
class SourceStats:
    mic_samples: int = 0
    silence_filled: int = 0  # samples of silence pushed for late/lost mic audio
    late_discarded: int = 0  # samples of late mic audio discarded to repay the debt


class MicSource:
    kind = "mic"

    def __init__(self, *, late_s: float = 0.1, max_debt_s: float = 0.3, sample_rate: int = 16000) -> None:
        self.stats = SourceStats()
        self._rate = sample_rate
        self._late = int(late_s * sample_rate)
        self._max_debt = int(max_debt_s * sample_rate)
        self._debt = 0
        self._last = -1e9  # clock time of the last packet

    def fill(self, timeline: Timeline, now: float) -> None:
        gap = timeline.due(now) - self._late - timeline.fed
        if gap <= 0:
            return
        if now - self._last < 0.5:  # the mic is flowing: this audio is late, not absent
            self._debt = min(self._debt + gap, self._max_debt)
        self.stats.silence_filled += gap
        timeline.push(np.zeros(gap, np.float32), now)

    def on_audio(self, timeline: Timeline, samples16k: np.ndarray, now: float) -> None:
        """A packet arrived (16 kHz mono): repay any silence debt, push the rest."""
        if now - self._last > 0.5:
            # first packet, or the mic resumed after a pause: anchor the fill line ``late_s``
            # behind the mic, so only a stall longer than that is filled with silence
            timeline.origin = now - timeline.fed / self._rate
        self._last = now
        self.stats.mic_samples += samples16k.size
        if self._debt:
            # repay only with audio that would put the timeline ahead of real time: late audio that
            # never comes (lost) must not make the next packets count as late too, or the silence
            # filled for one loss is repaid with speech, which falls behind again, and so on: at 5 %
            # loss every packet was discarded and the timeline was all silence
            ahead = timeline.fed + samples16k.size - timeline.due(now)
            n = min(self._debt, samples16k.size, max(0, ahead))
            self._debt -= n
            self.stats.late_discarded += n
            samples16k = samples16k[n:]
        timeline.push(samples16k, now)

    def restart(self) -> None:
        self._debt = 0

    @property
    def queued_s(self) -> float:
        return 0.0


class PresenterSource:
    kind = "presenter"

    def __init__(self, *, lead_s: float, max_queue_s: float = 300.0, sample_rate: int = 16000) -> None:
        self.stats = SourceStats()
        self._rate = sample_rate
        self._lead = int(round(lead_s * sample_rate))
        self._max_queue = max_queue_s * sample_rate
        self._queue: deque[np.ndarray] = deque()
        self._queued = 0
        # Marks, in queue coordinates (samples queued / consumed since the last restart).
        self._in = 0
        self._out = 0
        self._end_at = 0  # timeline index just past the last queued sample pushed
        self._marks: deque[tuple[int, bool, Hashable]] = deque()  # (position, is_end, label), in order
        # Called as on_mark(label, timeline_index) when a mark reaches the timeline.
        self.on_mark: Callable[[Hashable, int], None] | None = None

    def speak(self, samples16k: np.ndarray) -> float:
        """Queue speech; returns the seconds queued in all (including this)."""
        if self._queued + samples16k.size > self._max_queue:
            raise SpeechQueueFull(f"at most {self._max_queue / self._rate:.0f} s of speech may be queued")
        if samples16k.size:
            self._queue.append(np.asarray(samples16k, np.float32))
            self._queued += samples16k.size
            self._in += samples16k.size
        return self.queued_s

    def mark_start(self, label: Hashable) -> None:
        """Label the next sample queued: ``on_mark(label, i)`` once it lands at timeline index ``i``."""
        self._marks.append((self._in, False, label))

    def mark_end(self, label: Hashable) -> None:
        """Label the end of the speech queued so far: ``on_mark(label, i)`` once its last sample is
        in the timeline, ``i`` being the index just past it (at once if it already is)."""
        self._marks.append((self._in, True, label))
        self._resolve(self._out, self._out, self._end_at, self._end_at)

    def _resolve(self, start: int, stop: int, at: int, end_before: int) -> None:
        """Queued samples ``[start, stop)`` now sit at timeline index ``at`` on (``end_before``: just
        past the queued speech pushed before them): report the marks in there, in order."""
        while self._marks:
            pos, is_end, label = self._marks[0]
            if is_end and pos <= stop:
                tl = at + pos - start if pos > start else end_before
            elif not is_end and pos < stop:
                tl = at + max(0, pos - start)
            else:
                return
            self._marks.popleft()
            if self.on_mark is not None:
                self.on_mark(label, tl)

    def fill(self, timeline: Timeline, now: float) -> None:
        gap = timeline.due(now) + self._lead - timeline.fed
        while gap > 0:
            if not self._queue:
                timeline.push(np.zeros(gap, np.float32), now)
                return
            head = self._queue[0]
            take = head[:gap]
            if take.size == head.size:
                self._queue.popleft()
            else:
                self._queue[0] = head[gap:]
            self._queued -= take.size
            at, end_before = timeline.fed, self._end_at
            timeline.push(take, now)
            self._out += take.size
            self._end_at = timeline.fed
            if self._marks:
                self._resolve(self._out - take.size, self._out, at, end_before)
            gap -= take.size

    def restart(self) -> None:
        """Interrupt: forget the queued speech and its marks."""
        self._queue.clear()
        self._queued = 0
        self._in = self._out = self._end_at = 0
        self._marks.clear()

    @property
    def queued_s(self) -> float:
        return self._queued / self._rate
