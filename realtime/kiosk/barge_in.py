"""Barge-in: speech on the kiosk's microphone while the avatar speaks (webrtcvad over the last 0.4 s)."""

from __future__ import annotations

import numpy as np

__all__ = ["BargeIn"]


class BargeIn:
    """Speech on the microphone while the avatar speaks: webrtcvad over the last 0.4 s."""

    def __init__(self, *, speech_s: float = 0.3, window_s: float = 0.4, aggressiveness: int = 3,
                 floor_dbfs: float = -45.0) -> None:
        from realtime.vad import FRAME_S, VadStream

        self.vad = VadStream(aggressiveness, hangover_s=0.0, history_s=5.0, floor_dbfs=floor_dbfs)
        self.window = max(1, int(round(window_s / FRAME_S)))
        self.needed = max(1, min(self.window, int(round(speech_s / FRAME_S))))
        self.frame_s = FRAME_S
        self.last_speech_at = -1e9  # monotonic time of the last 20 ms judged speech

    def push(self, samples16k: np.ndarray, now: float) -> bool:
        """Feed mic audio; True when the recent audio is speech (enough of the window)."""
        if self.vad.push(samples16k) == 0:
            return False
        end = self.vad.frames_decided
        recent = self.vad.raw(max(0, end - self.window), end)
        if recent[-1]:
            self.last_speech_at = now
        return int(recent.sum()) >= self.needed

    def quiet_for(self, now: float) -> float:
        return now - self.last_speech_at
