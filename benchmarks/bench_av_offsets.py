"""Where the returned sound sits against its frame as it leaves the server, frame by frame.

    python -m benchmarks.bench_av_offsets [--seconds 120] [--no-age-limit] [--json PATH]

An in-process server and one aiortc mic client (the speech bursts of ``bench_server_latency``).
The server's tracks are watched from inside (their methods wrapped for the run): for every
rendered frame k, when frame k is handed to the encoder and when the first sample of its speech
leaves in an audio packet, and how much earlier speech was still queued in the audio track when
frame k's arrived (its FIFO residual).  No onset detection: the offset is exact, per frame.

This is how the soak's A/V drift was found: the FIFO drains at exactly real time, so speech that
came in a catch-up (two frames' worth at once) or after a stall stayed queued for the rest of the
call, putting the sound behind the lips by that much (a 70 ms plateau for 12 s in a 2-minute
run).  ``--no-age-limit`` runs the old behaviour (no 50 ms age limit in the audio track) for the
comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import RESULTS_DIR, machine_info, publish

WINDOW_S = 20.0


class Watch:
    """Wraps the tracks' and the session's methods for one run; records what leaves when."""

    def __init__(self, age_limit: bool) -> None:
        from realtime import session as session_mod
        from realtime import tracks

        self.frame: int | None = None
        self.deliveries: list[tuple[int, int, float, int]] = []  # (frame, first sample index, time, residual)
        self.audio_out: list[tuple[int, float]] = []  # (head index after the packet, time)
        self.video_out: dict[int, float] = {}  # frame -> time handed to the encoder
        self._saved = [(session_mod.Session, "on_frame"), (tracks.DelayedAudioTrack, "deliver"),
                       (tracks.DelayedAudioTrack, "recv"), (tracks.AvatarVideoTrack, "deliver"),
                       (tracks.AvatarVideoTrack, "recv"), (tracks.DelayedAudioTrack, "__init__")]
        self._orig = {(c, n): getattr(c, n) for c, n in self._saved}
        self._wrap(session_mod.Session, tracks, age_limit)

    def _wrap(self, session_cls, tracks, age_limit: bool) -> None:  # noqa: ANN001
        w, o = self, self._orig
        a_cls, v_cls = tracks.DelayedAudioTrack, tracks.AvatarVideoTrack

        def on_frame(s, frame, *args, **kw):  # noqa: ANN001, ANN202
            w.frame = frame
            return o[(session_cls, "on_frame")](s, frame, *args, **kw)

        def a_init(s, *args, **kw):  # noqa: ANN001, ANN202
            if not age_limit:
                kw["max_age_s"] = 1e9
            o[(a_cls, "__init__")](s, *args, **kw)
            s.probe_in = 0

        def a_deliver(s, x):  # noqa: ANN001, ANN202
            before, dropped = s._fifo.size, s.samples_dropped
            o[(a_cls, "deliver")](s, x)
            w.deliveries.append((w.frame, s.probe_in, time.monotonic(), before))
            s.probe_in += s._fifo.size - before + s.samples_dropped - dropped

        async def a_recv(s):  # noqa: ANN001, ANN202
            f = await o[(a_cls, "recv")](s)
            w.audio_out.append((s.probe_in - s._fifo.size, time.monotonic()))  # all drops are at the head
            return f

        def v_deliver(s, planes, meta=None):  # noqa: ANN001, ANN202
            s.probe_frame = w.frame
            return o[(v_cls, "deliver")](s, planes, meta)

        async def v_recv(s):  # noqa: ANN001, ANN202
            f = await o[(v_cls, "recv")](s)
            k = getattr(s, "probe_frame", None)
            if k is not None and k not in w.video_out:
                w.video_out[k] = time.monotonic()
            return f

        session_cls.on_frame = on_frame
        a_cls.__init__, a_cls.deliver, a_cls.recv = a_init, a_deliver, a_recv
        v_cls.deliver, v_cls.recv = v_deliver, v_recv

    def restore(self) -> None:
        for (cls, name), fn in self._orig.items():
            setattr(cls, name, fn)

    def offsets(self) -> list[tuple[float, float, float]]:
        """(time, audio out - video out, residual) per frame, times in s, offsets in ms."""
        heads = np.array([h for h, _ in self.audio_out])
        times = np.array([t for _, t in self.audio_out])
        out = []
        for frame, start, t, residual in self.deliveries:
            if frame is None or frame not in self.video_out:
                continue
            i = int(np.searchsorted(heads, start, side="right"))  # the packet that took sample `start`
            if i < heads.size:
                out.append((t, 1000 * (times[i] - self.video_out[frame]), 1000 * residual / 48000))
        return out


async def run(seconds: float, age_limit: bool) -> dict:
    import aiohttp

    from benchmarks.bench_server_latency import burst_signal
    from benchmarks.webrtc_client import connect, serving
    from engines.factory import create_engine
    from engines.manifest import DEFAULT_MODEL_DIR
    from export.avatar import ensure_default_avatar

    engine = create_engine("auto", DEFAULT_MODEL_DIR)
    ensure_default_avatar(None, engine.model_dir)
    mic, _ = burst_signal(seconds)
    watch = Watch(age_limit)
    try:
        async with serving(engine) as (base, _app), aiohttp.ClientSession() as http:
            client = await connect(base, http, mic=mic, keep_frames=False)
            await asyncio.sleep(seconds + 1.0)
            await client.close()
    finally:
        watch.restore()
    rows = watch.offsets()
    t0 = rows[0][0] if rows else 0.0
    windows = []
    for a in np.arange(0, seconds, WINDOW_S):
        sel = [r for r in rows if a <= r[0] - t0 < a + WINDOW_S]
        if sel:
            off, res = np.array([r[1] for r in sel]), np.array([r[2] for r in sel])
            windows.append({"from_s": float(a), "offset_p50_ms": round(float(np.median(off)), 1),
                            "offset_p90_ms": round(float(np.percentile(off, 90)), 1),
                            "residual_p50_ms": round(float(np.median(res)), 1)})
    res2 = [np.median([r[2] for r in rows if a <= r[0] - t0 < a + 2]) for a in np.arange(0, seconds - 2, 2)
            if any(a <= r[0] - t0 < a + 2 for r in rows)]
    slope = float(np.polyfit([r[0] - t0 for r in rows], [r[1] for r in rows], 1)[0] * 60) if len(rows) > 2 else None
    return {"benchmark": "av_offsets", "machine": machine_info(), "age_limit": age_limit,
            "settings": {"seconds": seconds}, "frames": len(rows), "windows": windows,
            "offset_drift_ms_per_min": slope,
            "residual_2s_windows_over_30ms": int(sum(x > 30 for x in res2)), "residual_2s_windows": len(res2),
            "residual_2s_max_ms": round(float(max(res2)), 1) if res2 else None}


def print_table(r: dict) -> None:
    print(f"\nage limit {'on (50 ms)' if r['age_limit'] else 'off'}: {r['frames']} frames; sound out - frame out, "
          f"per {WINDOW_S:g} s window:")
    for w in r["windows"]:
        print(f"  {w['from_s']:5.0f} s  p50 {w['offset_p50_ms']:+7.1f} ms  p90 {w['offset_p90_ms']:+7.1f} ms  "
              f"FIFO residual p50 {w['residual_p50_ms']:5.1f} ms")
    print(f"drift {r['offset_drift_ms_per_min']:+.2f} ms/min; 2-s windows with a residual median over 30 ms: "
          f"{r['residual_2s_windows_over_30ms']} of {r['residual_2s_windows']} (max {r['residual_2s_max_ms']} ms)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_av_offsets", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=120.0, help="mic duration (default: 120)")
    p.add_argument("--no-age-limit", action="store_true", help="the old audio track: queued speech never expires")
    p.add_argument("--json", type=Path, default=RESULTS_DIR / "av_offsets.json")
    args = p.parse_args(argv)
    result = asyncio.run(run(args.seconds, not args.no_age_limit))
    publish(result, args.json, None, print_table, lambda _r, _p: None)  # no plot: the table says it
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
