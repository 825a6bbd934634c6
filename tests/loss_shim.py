"""A network-fault shim for an aiortc peer: it sits between an ``RTCRtpSender`` and its DTLS
transport and drops or delays the RTP packets the sender hands down.  Not a test file.

    shim = LossShim(Bernoulli(0.05), jitter_s=0.03, seed=1)
    shim.install(sender)             # e.g. the client's mic sender, after setRemoteDescription
    shim.silence()                   # from now on send nothing (RTP and RTCP): a client gone quiet

What it models (the packets are SRTP-protected below the shim, so the receiver sees exactly what
a lossy network would have delivered):

- :class:`Bernoulli` loss: each packet lost with probability ``p`` (5 %, 20 %);
- :class:`GilbertElliott` loss: a two-state Markov chain (good: no loss; bad: every packet
  lost), parameterised by the mean loss rate and the mean burst length in packets;
- :class:`FixedBursts`: everything sent inside ``burst_s`` every ``period_s`` is lost (e.g. a
  200 ms outage every 2 s);
- jitter: each surviving packet is held ``base_s + U(-jitter_s, +jitter_s)`` (clamped at 0)
  before it goes out, so packets overtake one another (reordering) when the spread exceeds the
  20 ms packet interval;
- :meth:`LossShim.silence`: nothing more leaves this sender, RTCP sender reports included,
  while the peer connection stays open (ICE keeps answering: a frozen client, not a dead host).

Only the one sender's traffic passes through the shim: the receivers' RTCP (receiver reports,
NACK, PLI) of the same peer connection goes out untouched.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

from aiortc.rtp import is_rtcp

__all__ = ["Bernoulli", "FixedBursts", "GilbertElliott", "LossShim", "ShimStats"]


class Bernoulli:
    def __init__(self, p: float) -> None:
        self.p = p

    def lost(self, rng: random.Random, now: float) -> bool:
        return rng.random() < self.p


class GilbertElliott:
    """Bursty loss: good -> bad with ``p_gb`` per packet, bad -> good with ``1 / mean_burst``."""

    def __init__(self, loss: float, mean_burst: float) -> None:
        self.p_bg = 1.0 / mean_burst
        self.p_gb = loss * self.p_bg / (1.0 - loss)  # stationary share of "bad" = loss
        self.bad = False

    def lost(self, rng: random.Random, now: float) -> bool:
        self.bad = rng.random() >= self.p_bg if self.bad else rng.random() < self.p_gb
        return self.bad


class FixedBursts:
    """Everything in ``[k * period_s + offset_s, ... + burst_s)`` is lost (time since the first packet)."""

    def __init__(self, burst_s: float = 0.2, period_s: float = 2.0, offset_s: float = 1.0) -> None:
        self.burst_s, self.period_s, self.offset_s = burst_s, period_s, offset_s
        self._t0: float | None = None

    def lost(self, rng: random.Random, now: float) -> bool:
        if self._t0 is None:
            self._t0 = now
        phase = (now - self._t0 - self.offset_s) % self.period_s
        return now - self._t0 >= self.offset_s and phase < self.burst_s


class NoLoss:
    def lost(self, rng: random.Random, now: float) -> bool:
        return False


@dataclass
class ShimStats:
    rtp_sent: int = 0
    rtp_lost: int = 0
    rtcp_sent: int = 0
    silenced: int = 0  # packets (RTP or RTCP) swallowed after silence()
    reordered: int = 0  # packets that left before one handed down ahead of them
    lost_runs: list[int] = field(default_factory=list)  # lengths of consecutive RTP losses

    @property
    def loss_rate(self) -> float:
        n = self.rtp_sent + self.rtp_lost
        return self.rtp_lost / n if n else 0.0


class _ShimTransport:
    """Stands in for the sender's ``RTCDtlsTransport``: ``_send_rtp`` goes through the shim,
    everything else is the real transport's."""

    def __init__(self, real, shim: LossShim) -> None:  # noqa: ANN001 - aiortc's RTCDtlsTransport
        self._real = real
        self._shim = shim

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self._real, name)

    async def _send_rtp(self, data: bytes) -> None:
        await self._shim.send(self._real, data)


class LossShim:
    def __init__(self, loss=None, *, jitter_s: float = 0.0, base_delay_s: float | None = None,  # noqa: ANN001
                 seed: int = 0) -> None:
        self.loss = loss or NoLoss()
        self.jitter_s = jitter_s
        self.base_s = jitter_s if base_delay_s is None else base_delay_s  # so no delay is negative
        self.rng = random.Random(seed)
        self.stats = ShimStats()
        self.silent = False
        self._run = 0
        self._seq_in = 0
        self._last_out = -1
        self._pending: set[asyncio.Task] = set()

    def install(self, sender) -> None:  # noqa: ANN001 - aiortc's RTCRtpSender
        """Put the shim under ``sender`` (once its transport is set: after setRemoteDescription)."""
        real = sender.transport
        if isinstance(real, _ShimTransport):
            raise RuntimeError("this sender already has a shim")
        sender._RTCRtpSender__transport = _ShimTransport(real, self)

    def silence(self) -> None:
        """From now on the sender sends nothing at all; the peer connection is left open."""
        self.silent = True

    async def send(self, real, data: bytes) -> None:  # noqa: ANN001
        if self.silent:
            self.stats.silenced += 1
            return
        if is_rtcp(data):
            self.stats.rtcp_sent += 1
            await real._send_rtp(data)
            return
        if self.loss.lost(self.rng, time.monotonic()):
            self.stats.rtp_lost += 1
            self._run += 1
            return
        if self._run:
            self.stats.lost_runs.append(self._run)
            self._run = 0
        self.stats.rtp_sent += 1
        delay = max(0.0, self.base_s + self.rng.uniform(-self.jitter_s, self.jitter_s)) if self.jitter_s else 0.0
        if delay <= 0:
            await real._send_rtp(data)
            return
        self._seq_in += 1
        task = asyncio.ensure_future(self._later(real, data, delay, self._seq_in))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _later(self, real, data: bytes, delay: float, seq: int) -> None:  # noqa: ANN001
        await asyncio.sleep(delay)
        if self.silent:
            self.stats.silenced += 1
            return
        if seq < self._last_out:
            self.stats.reordered += 1
        self._last_out = max(self._last_out, seq)
        try:
            await real._send_rtp(data)
        except ConnectionError:  # the connection closed while the packet was held
            pass
