"""ICE settings that keep a local server local.

aiortc asks Google's public STUN server when no ICE servers are configured, and aioice offers
every interface's address as a host candidate.  A server bound to loopback serves a browser on
the same machine: it needs neither, and must not send packets elsewhere.  So: no STUN unless
asked for (``--stun``), and loopback-only host candidates when the HTTP side binds to loopback.
"""

from __future__ import annotations

import ipaddress

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer

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
