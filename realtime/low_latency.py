"""Two run-time adjustments to aiortc for a live avatar, installed in-process (no file patched).

1. **Audio jitter buffer.**  aiortc's ``RTCRtpReceiver`` builds its audio ``JitterBuffer`` with
   ``prefetch=4``: a 20 ms Opus frame is released only once four later frames have arrived, about
   80 ms of added mic-to-mouth latency, and even with no prefetch a frame only leaves when the
   next packet arrives (+20 ms).  :func:`install` rebinds the ``JitterBuffer`` name that
   ``aiortc.rtcrtpreceiver`` looks up to a factory whose *audio* buffer releases each in-order
   packet as it arrives (an Opus RTP packet is a whole frame); only behind a gap does it wait,
   one packet, for a reordered one, then hands out what is ready as one merged Opus packet
   (``_with_ready_packets``).  The video buffer is built unchanged.  Cost: reordering tolerance
   on audio is one packet, which on a LAN or loopback is none worth 60 ms.  A *lost* audio
   packet is given up on as soon as the frame behind it is complete (aiortc waits for 16 later
   packets and then stays ~300 ms behind: see ``_skip_gap``).
2. **Damped video bitrate.**  aiortc rebuilds its VP8/H.264 encoder (a keyframe) whenever the
   target bitrate moves by more than 10 %, and REMB feedback ramps it in small steps: a keyframe
   storm.  :func:`install` rebinds ``aiortc.rtcrtpsender.get_encoder`` so video senders get
   encoder subclasses whose ``target_bitrate`` setter goes through a :class:`BitrateDamper`: a
   few ladder steps, down at once (congestion), up only after a hold time.  Their ``encode`` is
   also timed for the metrics (``ENCODE_OBSERVERS``).  The VP8 one also runs without libvpx's
   denoiser (:mod:`realtime.vp8_encoder`).

Both are process-wide (every peer connection made afterwards, the tests' client peers too) and
idempotent; :func:`uninstall` restores aiortc's originals.
"""

from __future__ import annotations

import time
import weakref
from typing import Callable

from aiortc import rtcrtpreceiver, rtcrtpsender
from aiortc.codecs import get_encoder as _aiortc_get_encoder
from aiortc.codecs.h264 import H264Encoder
from aiortc.jitterbuffer import JitterBuffer, JitterFrame

from realtime.opus_packets import merge_packets
from realtime.vp8_encoder import TunedVp8Encoder

__all__ = ["AUDIO_PREFETCH", "BitrateDamper", "DampedH264Encoder", "DampedVp8Encoder",
           "ENCODE_OBSERVERS", "JITTER_OBSERVERS", "install", "installed", "uninstall", "live_audio_buffers",
           "live_encoders"]

_LIVE_BUFFERS: weakref.WeakSet = weakref.WeakSet()  # the audio jitter buffers made while installed
_LIVE_ENCODERS: weakref.WeakSet = weakref.WeakSet()
_installs = 0

AUDIO_PREFETCH = 1
BITRATE_LADDER = (300_000, 500_000, 800_000, 1_200_000, 1_500_000)  # bps
ENCODE_OBSERVERS: list[Callable[[float], None]] = []  # called with each video encode's seconds
# called with each audio frame's jitter-buffer hold: its first packet's arrival -> its release
JITTER_OBSERVERS: list[Callable[[float], None]] = []


class BitrateDamper:
    """Maps a stream of REMB estimates to a few stable encoder targets (pure, testable)."""

    def __init__(self, ladder: tuple[int, ...] = BITRATE_LADDER, hold_up_s: float = 5.0,
                 initial: int = 500_000) -> None:
        self.ladder = tuple(sorted(ladder))
        self.hold_up_s = hold_up_s
        self.current = self._step_at_or_below(initial)
        self._changed_at = -1e9

    def _step_at_or_below(self, bps: float) -> int:
        steps = [s for s in self.ladder if s <= bps]
        return steps[-1] if steps else self.ladder[0]

    def update(self, estimate_bps: float, now: float) -> int:
        """The target for an estimate: the ladder step at or below it, raised only after a hold."""
        step = self._step_at_or_below(estimate_bps)
        if step < self.current or (step > self.current and now - self._changed_at >= self.hold_up_s):
            self.current = step
            self._changed_at = now
        return self.current


def _damped(base: type, name: str) -> type:
    class Damped(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.damper = BitrateDamper(initial=base.target_bitrate.fget(self))
            _LIVE_ENCODERS.add(self)

        @property
        def target_bitrate(self) -> int:
            return base.target_bitrate.fget(self)

        @target_bitrate.setter
        def target_bitrate(self, bitrate: int) -> None:
            base.target_bitrate.fset(self, self.damper.update(bitrate, time.monotonic()))

        def encode(self, frame, force_keyframe: bool = False):  # noqa: ANN001 - aiortc's signature
            t0 = time.perf_counter()
            out = super().encode(frame, force_keyframe)
            dt = time.perf_counter() - t0
            for observe in ENCODE_OBSERVERS:
                observe(dt)
            return out

    Damped.__name__ = Damped.__qualname__ = name
    Damped.__doc__ = f"{base.__name__} whose REMB-driven target bitrate moves in damped ladder steps."
    return Damped


DampedVp8Encoder = _damped(TunedVp8Encoder, "DampedVp8Encoder")  # and libvpx's denoiser off (realtime/vp8_encoder.py)
DampedH264Encoder = _damped(H264Encoder, "DampedH264Encoder")


class _TimedJitterBuffer(JitterBuffer):
    """The audio jitter buffer, timing how long each frame waits in it (the first latency stage)."""

    def __init__(self, capacity: int, prefetch: int = 0, is_video: bool = False) -> None:
        super().__init__(capacity, prefetch=prefetch, is_video=is_video)
        self.prefetch_frames = prefetch  # what this buffer waits for before releasing the first frame
        self._arrived: dict[int, float] = {}  # RTP timestamp -> arrival of its first packet
        self.gaps_skipped = 0  # missing packets given up on (lost, or reordered past their slot)
        _LIVE_BUFFERS.add(self)

    def add(self, packet):  # noqa: ANN001, ANN201 - aiortc's signature
        now = time.monotonic()
        self._arrived.setdefault(packet.timestamp, now)
        pli, frame = super().add(packet)
        if frame is None:
            frame = self._skip_gap(packet.sequence_number)
        frame, released = self._with_ready_packets(frame)
        if frame is not None:
            t = self._arrived.pop(frame.timestamp, None)
            for ts in released:
                self._arrived.pop(ts, None)
            if t is not None:
                for observe in JITTER_OBSERVERS:
                    observe(now - t)
            if len(self._arrived) > 64:  # lost/discarded frames never come out: forget them
                for ts in sorted(self._arrived, key=self._arrived.__getitem__)[:-16]:
                    del self._arrived[ts]
        return pli, frame


    def _with_ready_packets(self, frame):  # noqa: ANN001, ANN202 - aiortc's JitterFrame or None
        """Hand out every in-order packet at the head now, with ``frame`` (released before them).

        An Opus RTP packet is a whole frame (RFC 7587), so one in order needs no next packet to be
        complete: waiting for it, as aiortc's buffer does, cost 20 ms on every packet.  Several at
        once (after a gap, a reordered packet) go out as one Opus packet (``merge_packets``), since
        the receiver takes one frame per arriving packet and would otherwise stay a packet behind.
        Returns the frame and the RTP timestamps merged into it after its first.
        """
        n, o = self._capacity, self._origin
        if o is None:
            return frame, []
        ready = []
        while len(ready) < 6 and (p := self._packets[(o + len(ready)) % n]) is not None:
            ready.append(p)
        if not ready:
            return frame, []
        payloads = ([frame.data] if frame is not None else []) + [p._data for p in ready]
        merged = merge_packets(payloads)
        if merged is None:  # cannot share a packet: in order, one per arrival
            if frame is not None:
                return frame, []
            ready, merged = ready[:1], ready[0]._data
        self.remove(len(ready))
        first = frame.timestamp if frame is not None else ready[0].timestamp
        return JitterFrame(data=merged, timestamp=first), [p.timestamp for p in ready if p.timestamp != first]

    def _skip_gap(self, sequence_number: int):  # noqa: ANN202 - aiortc's JitterFrame or None
        """A lost packet never holds up the audio around it.

        aiortc's buffer waits for a missing packet until 16 later ones have arrived (320 ms of
        audio) and then releases one frame per arriving packet, so after the first loss every
        later frame stayed ~300 ms late: the session's mic timeline then saw the speech as late,
        filled silence in its place and discarded it (at 5 % loss the mouth never moved;
        tests/test_network_faults.py).  Here an audio frame (one RTP packet in aiortc) before a
        gap is complete as soon as any later packet has come, and a gap at the head is skipped
        once the frame behind it is complete: a frame leaves when the next packet that arrives
        does, loss or not.  A packet reordered by more than one place comes after its slot and
        is dropped.
        """
        n, o = self._capacity, self._origin
        if o is None:
            return None
        head = self._packets[o % n]
        if head is None:  # a gap at the head: skip it once a complete frame waits behind it
            for i in range(1, n - 1):
                first, nxt = self._packets[(o + i) % n], self._packets[(o + i + 1) % n]
                if first is None:
                    continue
                if nxt is None or nxt.timestamp == first.timestamp:
                    return None
                self.remove(i)
                self.gaps_skipped += i
                return self._remove_frame(sequence_number)
            return None
        run = 1  # the head frame's packets, up to the gap that keeps aiortc from releasing it
        while run < n and (p := self._packets[(o + run) % n]) is not None and p.timestamp == head.timestamp:
            run += 1
        if run >= n - 1 or not any(self._packets[(o + j) % n] is not None for j in range(run + 1, n)):
            return None
        frame = JitterFrame(data=b"".join(self._packets[(o + j) % n]._data for j in range(run)),
                            timestamp=head.timestamp)
        self.remove(run)
        return frame


def _low_latency_jitter_buffer(capacity: int, prefetch: int = 0, is_video: bool = False) -> JitterBuffer:
    if is_video:
        return JitterBuffer(capacity, prefetch=prefetch, is_video=True)
    return _TimedJitterBuffer(capacity, prefetch=min(prefetch, AUDIO_PREFETCH))


def _damped_get_encoder(codec):  # noqa: ANN001, ANN202 - aiortc's signature
    mime = codec.mimeType.lower()
    if mime == "video/vp8":
        return DampedVp8Encoder()
    if mime == "video/h264":
        return DampedH264Encoder()
    return _aiortc_get_encoder(codec)


def install() -> None:
    """Rebind aiortc's factories; counted, so every ``install`` is undone by one ``uninstall``."""
    global _installs
    _installs += 1
    rtcrtpreceiver.JitterBuffer = _low_latency_jitter_buffer
    rtcrtpsender.get_encoder = _damped_get_encoder


def uninstall() -> None:
    """Undo one ``install``; aiortc's own factories come back when the last user is gone."""
    global _installs
    _installs = max(0, _installs - 1)
    if _installs == 0:
        rtcrtpreceiver.JitterBuffer = JitterBuffer
        rtcrtpsender.get_encoder = _aiortc_get_encoder


def live_audio_buffers() -> list[JitterBuffer]:
    """The low-latency audio jitter buffers still alive (what tests and debugging inspect)."""
    return list(_LIVE_BUFFERS)


def live_encoders() -> list[object]:
    """The damped video encoders still alive."""
    return list(_LIVE_ENCODERS)


def installed() -> bool:
    return rtcrtpreceiver.JitterBuffer is _low_latency_jitter_buffer
