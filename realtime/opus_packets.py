"""Several Opus packets as one (RFC 6716 section 3.2.5, "code 3"), so a jitter buffer can hand
out a backlog in a single frame.

aiortc's receiver takes at most one frame from its jitter buffer per arriving packet.  The mic's
buffer (``realtime.low_latency``) releases each in-order packet as it arrives; after a loss or a
reorder two or more packets are ready at once, and handing them out one per arrival would leave
the mic one packet (20 ms) late for the rest of the call.  Merged into one code-3 packet, they
decode to exactly the samples they would have given one by one.
"""

from __future__ import annotations

__all__ = ["MAX_PACKET_MS", "frame_ms", "merge_packets"]

MAX_PACKET_MS = 120.0  # an Opus packet carries at most 120 ms


def frame_ms(toc: int) -> float:
    """Duration of one frame for a TOC byte's configuration (RFC 6716 table 2)."""
    config = toc >> 3
    if config < 12:  # SILK-only: 10, 20, 40, 60 ms
        return (10.0, 20.0, 40.0, 60.0)[config % 4]
    if config < 16:  # hybrid: 10, 20 ms
        return (10.0, 20.0)[config % 2]
    return (2.5, 5.0, 10.0, 20.0)[config % 4]  # CELT-only


def _length_bytes(n: int) -> bytes:
    if n < 252:
        return bytes((n,))
    first = 252 + ((n - 252) & 3)
    return bytes((first, (n - first) >> 2))


def merge_packets(packets: list[bytes]) -> bytes | None:
    """One code-3 (VBR) packet with the frames of ``packets``, in order; ``packets[0]`` when there
    is one.  ``None`` when they cannot share a packet: not all single-frame (code 0) packets, a
    different configuration or channel count, more than 120 ms, or an empty packet."""
    if len(packets) == 1:
        return packets[0]
    if not packets or any(len(p) < 1 for p in packets):
        return None
    toc = packets[0][0]
    if any(p[0] != toc for p in packets) or toc & 3 != 0:
        return None
    if len(packets) > 48 or len(packets) * frame_ms(toc) > MAX_PACKET_MS:
        return None
    frames = [p[1:] for p in packets]
    if any(len(f) > 1275 for f in frames):
        return None
    header = bytes(((toc & 0xFC) | 3, 0x80 | len(frames)))  # code 3, VBR, frame count
    lengths = b"".join(_length_bytes(len(f)) for f in frames[:-1])
    return header + lengths + b"".join(frames)
