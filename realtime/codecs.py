"""Which video codec a peer connection sends: the server's ``--codec``, set before negotiation."""

from __future__ import annotations

from aiortc import RTCPeerConnection, RTCRtpSender

__all__ = ["prefer_video_codec"]


def prefer_video_codec(pc: RTCPeerConnection, sender: RTCRtpSender, codec: str) -> None:
    """Prefer ``codec`` (+ its RTX) on the video transceiver of ``sender``.  aiortc picks codecs inside
    ``setRemoteDescription``, so this must come before it."""
    caps = RTCRtpSender.getCapabilities("video").codecs
    prefs = [c for c in caps if c.mimeType.lower() == f"video/{codec}"]
    prefs += [c for c in caps if c.mimeType.lower() == "video/rtx"]
    for t in pc.getTransceivers():
        if t.sender is sender:
            t.setCodecPreferences(prefs)
