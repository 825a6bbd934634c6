"""ICE and DTLS settings of our peers: a local server stays local; we take the DTLS server role.

aiortc asks Google's public STUN server when no ICE servers are configured, and aioice offers
every interface's address as a host candidate.  A server bound to loopback serves a browser on
the same machine: it needs neither, and must not send packets elsewhere.  So: no STUN unless
asked for (``--stun``), and loopback-only host candidates when the HTTP side binds to loopback.
"""

from __future__ import annotations

import ipaddress

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection

_original_host_addresses = aioice.ice.get_host_addresses


def peer_configuration(stun_urls: list[str] | tuple[str, ...] = ()) -> RTCConfiguration:
    """An RTCConfiguration with exactly these STUN servers (none by default)."""
    return RTCConfiguration(iceServers=[RTCIceServer(urls=u) for u in stun_urls])


def _loopback_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    return (["127.0.0.1"] if use_ipv4 else []) + (["::1"] if use_ipv6 and not use_ipv4 else [])


def use_loopback_candidates(enabled: bool = True) -> None:
    """Offer only loopback host candidates (process-wide: aioice has no per-connection hook)."""
    aioice.ice.get_host_addresses = _loopback_addresses if enabled else _original_host_addresses


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def take_dtls_server_role(pc: RTCPeerConnection, offer: str) -> None:
    """Answer ``a=setup:passive`` to an ``actpass`` offer: we are the DTLS server, with our ECDSA
    certificate.  aiortc answers ``active`` by default, and as DTLS client it offers only
    ECDHE-ECDSA cipher suites, so a peer with an RSA certificate (GStreamer's webrtcbin, hence
    gst-plugins-rs' whipclientsink) failed the handshake with "no shared cipher".  RFC 5763 lets
    the answerer pick either role.  Uses aiortc's private ``_set_role`` (aiortc has no public knob)."""
    if "a=setup:actpass" not in offer:
        return  # the offerer chose its role; aiortc follows it
    for t in pc.getTransceivers():
        transport = t.receiver.transport
        if getattr(transport, "_role", None) == "auto":
            transport._set_role("server")
