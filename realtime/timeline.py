"""One session's speech timeline: every 16 kHz sample its front end has heard, numbered from 0.

Sample 0 is the session's start or its last interrupt.  Video frame ``k`` shows the speech at
``k / fps``, so the audio sent back with frame ``k`` is samples ``[k*spf, (k+1)*spf)`` — which is
what keeps the returned sound on the lips.  The timeline is the one place the samples are kept
(a ring of ``history_s``); the front end (mel, VAD) keeps only what it derives from them, for
the same span.  Each 20 ms slot also remembers when it was heard, for the latency stages.

Pure bookkeeping: no I/O and no clock reads except ``restart``'s origin, passed in.
"""

from __future__ import annotations

import numpy as np

from engines.audio_convention import AudioConvention
from engines.mel import HOP, N_FFT
from engines.windows import window_end
from realtime.audio_frontend import AudioFrontEnd

__all__ = ["Timeline", "SLOT"]

SLOT = 320  # 20 ms at 16 kHz: the unit arrival times are kept in


class Timeline:
    def __init__(self, convention: AudioConvention, *, history_s: float = 4.0) -> None:
        self.convention = convention
        self.fps = convention.fps
        self.spf = convention.samples_per_frame
        self.sample_rate = convention.sample_rate
        self.front = AudioFrontEnd(convention, history_s=history_s)
        self._ring = np.zeros(int(history_s * self.sample_rate) // SLOT * SLOT, np.float32)
        self._heard = np.zeros(self._ring.size // SLOT, np.float64)  # arrival time per slot
        self.restart(0.0)

    def restart(self, origin: float) -> None:
        """Start afresh at sample 0 = clock time ``origin`` (session start, interrupt)."""
        self.front.reset()
        self.origin = origin
        self.fed = 0  # samples pushed since the restart
        self.delivered = 0  # samples handed back to the peer with their frames

    def push(self, x: np.ndarray, heard_at: float) -> None:
        """Append samples heard at clock time ``heard_at``."""
        if x.size == 0:
            return
        self.front.push(x)
        idx = (self.fed + np.arange(x.size)) % self._ring.size
        self._ring[idx] = x
        first, last = self.fed // SLOT, (self.fed + x.size - 1) // SLOT
        self._heard[np.arange(first, last + 1) % self._heard.size] = heard_at
        self.fed += x.size

    def due(self, now: float) -> int:
        """Samples that real time has reached since the origin."""
        return int((now - self.origin) * self.sample_rate)

    def audio_of_frames(self, start: int, stop: int) -> np.ndarray:
        """Samples of video frames ``[start, stop)`` (silence where no longer or not yet kept)."""
        a, b = start * self.spf, stop * self.spf
        out = np.zeros(b - a, np.float32)
        lo = max(a, self.fed - self._ring.size)
        hi = min(b, self.fed)
        if hi > lo:
            out[lo - a:hi - a] = self._ring[np.arange(lo, hi) % self._ring.size]
        return out

    def take_audio_until(self, frame: int, max_frames: int) -> np.ndarray | None:
        """The speech not yet handed back, up to the end of ``frame``, at most ``max_frames`` of it.

        Older audio (e.g. from before the peer connected, or skipped frames beyond the cap) is
        dropped: it would only sit in the audio track's queue and put the sound behind the lips.
        """
        first = max(self.delivered // self.spf, frame + 1 - max_frames)
        if frame + 1 <= first:
            return None
        self.delivered = (frame + 1) * self.spf
        return self.audio_of_frames(first, frame + 1)

    def heard_at(self, frame: int) -> float:
        """When the speech at frame ``frame``'s instant was heard."""
        return float(self._heard[(frame * self.spf // SLOT) % self._heard.size])

    def ready_at(self, frame: int, now: float) -> float:
        """When the last sample of frame ``frame``'s mel window was heard (``now`` if not yet)."""
        # mel frame j is complete once j * HOP + N_FFT / 2 samples are in (centred STFT)
        last = (window_end(frame, self.fps, self.convention.lookahead_s) - 1) * HOP + N_FFT // 2 - 1
        if last >= self.fed:
            return now
        return float(self._heard[(last // SLOT) % self._heard.size])

    def frame_time(self, frame: int) -> float:
        """Clock time of frame ``frame``'s instant: continuous across restarts (idle motion uses it)."""
        return self.origin + frame / self.fps
