"""Receive-side latency of lipstream's own aiortc clients: release a video frame at its last packet.

aiortc's video ``JitterBuffer`` hands a frame to the decoder only when the *next* frame's first
packet arrives (it detects the end of a frame by a timestamp change), so every decoded frame
comes one frame interval late: 40 ms at 25 fps.  Browsers finish a frame on the RTP marker bit,
which senders set on a frame's last packet (RFC 3550 / RFC 7741 for VP8; aiortc's sender does).
:class:`MarkerJitterBuffer` does the same: when a packet with the marker bit completes a
contiguous run of one timestamp from the buffer's origin, that frame is released at once;
anything else (loss, reordering, no marker) falls back to aiortc's own logic.

Used where lipstream itself receives video: the remote agent backend (``integrations/backends``)
and the benchmark clients that ask for it.  It replaces a private attribute of aiortc's
``RTCRtpReceiver`` (there is no public hook): :func:`release_frames_on_marker` checks that the
attribute is there and leaves aiortc's buffer alone otherwise.
"""

from __future__ import annotations

import logging
from typing import Any

from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket

log = logging.getLogger(__name__)

__all__ = ["MarkerJitterBuffer", "release_frames_on_marker"]

_ATTR = "_RTCRtpReceiver__jitter_buffer"  # aiortc 1.9 - 1.16


class MarkerJitterBuffer(JitterBuffer):
    """aiortc's video jitter buffer, plus: a frame whose marker packet has arrived goes out now."""

    def __init__(self, capacity: int = 512) -> None:
        super().__init__(capacity=capacity, is_video=True)

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        pli, frame = super().add(packet)
        if frame is None and packet.marker:
            frame = self._complete_at_marker(packet)
        return pli, frame

    def _complete_at_marker(self, marker: RtpPacket) -> JitterFrame | None:
        if self._origin is None:
            return None
        packets = []
        for count in range(self.capacity):
            packet = self._packets[(self._origin + count) % self.capacity]
            if packet is None or packet.timestamp != marker.timestamp:
                return None  # a gap, or an older frame still waiting: aiortc's rules decide
            packets.append(packet)
            if packet.sequence_number == marker.sequence_number:
                self.remove(count + 1)
                return JitterFrame(data=b"".join(p._data for p in packets), timestamp=marker.timestamp)
        return None


def release_frames_on_marker(pc: Any) -> int:
    """Give every video receiver of ``pc`` (an aiortc RTCPeerConnection, before media flows) a
    :class:`MarkerJitterBuffer`; returns how many were replaced."""
    replaced = 0
    for transceiver in pc.getTransceivers():
        receiver = transceiver.receiver
        if transceiver.kind != "video" or not isinstance(getattr(receiver, _ATTR, None), JitterBuffer):
            continue
        setattr(receiver, _ATTR, MarkerJitterBuffer(getattr(receiver, _ATTR).capacity))
        replaced += 1
    if not replaced:
        log.debug("no aiortc video jitter buffer to replace (another aiortc version?)")
    return replaced
