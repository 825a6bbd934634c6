"""MarkerJitterBuffer: a video frame leaves aiortc's jitter buffer at its marker packet, not one
frame later; gaps and marker-less frames keep aiortc's behaviour.  And over real loopback WebRTC,
frames decoded through it arrive earlier than through aiortc's own buffer."""

from __future__ import annotations

from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from realtime.video_receiver import MarkerJitterBuffer


def packet(seq: int, ts: int, marker: bool, data: bytes) -> RtpPacket:
    p = RtpPacket(payload_type=96, sequence_number=seq, timestamp=ts, marker=int(marker))
    p._data = data  # what aiortc's receiver sets after depayloading
    return p


def frames(buffer: JitterBuffer, packets: list[RtpPacket]) -> list[tuple[int, int, bytes]]:
    """(index of the packet that released it, timestamp, data) for every frame released."""
    out = []
    for i, p in enumerate(packets):
        _, frame = buffer.add(p)
        if frame is not None:
            out.append((i, frame.timestamp, frame.data))
    return out


STREAM = [packet(100, 3600, False, b"a"), packet(101, 3600, False, b"b"), packet(102, 3600, True, b"c"),
          packet(103, 7200, True, b"d"),
          packet(104, 10800, False, b"e"), packet(105, 10800, True, b"f"),
          packet(106, 14400, False, b"g")]


def test_frames_leave_at_their_marker_packet() -> None:
    assert frames(MarkerJitterBuffer(), STREAM) == [(2, 3600, b"abc"), (3, 7200, b"d"), (5, 10800, b"ef")]


def test_aiortcs_own_buffer_waits_for_the_next_frame() -> None:
    # the behaviour this module works around: each frame one packet (one frame interval) later
    assert frames(JitterBuffer(512, is_video=True), STREAM) == [(3, 3600, b"abc"), (4, 7200, b"d"), (6, 10800, b"ef")]


def test_a_gap_is_not_bridged_by_the_marker() -> None:
    lossy = [packet(100, 3600, False, b"a"), packet(102, 3600, True, b"c"),  # 101 late: not complete
             packet(101, 3600, False, b"b"),
             packet(103, 7200, True, b"d"),  # releases 3600 (aiortc's rule: one frame per packet)
             packet(104, 10800, False, b"e")]
    assert frames(MarkerJitterBuffer(), lossy) == [(3, 3600, b"abc"), (4, 7200, b"d")]


def test_no_marker_means_aiortcs_rule() -> None:
    plain = [packet(100, 3600, False, b"a"), packet(101, 3600, False, b"b"), packet(102, 7200, False, b"c")]
    assert frames(MarkerJitterBuffer(), plain) == [(2, 3600, b"ab")]



def test_installed_on_the_video_receivers_of_a_peer_connection() -> None:
    """Guards the private aiortc attribute it replaces: a new aiortc that renames it fails here."""
    import asyncio

    from aiortc import RTCPeerConnection

    from realtime.video_receiver import release_frames_on_marker

    async def go() -> tuple[int, list]:
        pc = RTCPeerConnection()
        pc.addTransceiver("audio", direction="recvonly")
        pc.addTransceiver("video", direction="recvonly")
        n = release_frames_on_marker(pc)
        kinds = [type(getattr(t.receiver, "_RTCRtpReceiver__jitter_buffer")).__name__ for t in pc.getTransceivers()]
        await pc.close()
        return n, kinds

    assert asyncio.run(go()) == (1, ["JitterBuffer", "MarkerJitterBuffer"])
