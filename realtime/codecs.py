"""Codec choices in negotiation: the video codec we send (the server's ``--codec``, set before
negotiation) and the Opus packet time we ask the peer's microphone for (``--mic-ptime``)."""

from __future__ import annotations

from aiortc import RTCPeerConnection, RTCRtpSender

__all__ = ["prefer_video_codec", "with_mic_ptime"]


def prefer_video_codec(pc: RTCPeerConnection, sender: RTCRtpSender, codec: str) -> None:
    """Prefer ``codec`` (+ its RTX) on the video transceiver of ``sender``.  aiortc picks codecs inside
    ``setRemoteDescription``, so this must come before it."""
    caps = RTCRtpSender.getCapabilities("video").codecs
    prefs = [c for c in caps if c.mimeType.lower() == f"video/{codec}"]
    prefs += [c for c in caps if c.mimeType.lower() == "video/rtx"]
    for t in pc.getTransceivers():
        if t.sender is sender:
            t.setCodecPreferences(prefs)


def with_mic_ptime(answer_sdp: str, ptime_ms: int) -> str:
    """``answer_sdp`` with ``a=ptime:PTIME`` in its audio section, unless 20 (Opus' usual packet).

    A WebRTC sender sizes its Opus packets from the *remote* description's ``ptime``: Chromium
    sends 10 ms packets for ``a=ptime:10`` (measured: 480-sample frames at the server).  A packet
    cannot leave the browser before its last sample is captured, so 10 ms packets reach the
    server ~10 ms sooner, for twice the packets (per-packet work in aiortc: SRTP, Opus decode).
    Only the text sent to the peer changes; aiortc's own session is untouched.
    """
    if ptime_ms == 20 or "m=audio" not in answer_sdp:
        return answer_sdp
    eol = "\r\n" if "\r\n" in answer_sdp else "\n"
    lines = answer_sdp.split(eol)
    trailing = lines[-1] == ""
    out, in_audio, ptime = [], False, f"a=ptime:{ptime_ms}"
    for line in lines[:-1] if trailing else lines:
        if line.startswith("m="):
            if in_audio:
                out.append(ptime)
            in_audio = line.startswith("m=audio")
        elif in_audio and line.startswith("a=ptime:"):
            continue  # ours replaces any
        out.append(line)
    if in_audio:
        out.append(ptime)
    return eol.join(out) + (eol if trailing else "")
