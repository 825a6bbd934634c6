"""One benchmark client in a process of its own: an aiortc peer whose mic plays speech bursts.

    python -m benchmarks.load_client --base http://127.0.0.1:PORT [--mic-seconds 120]

``benchmarks/bench_concurrency.py`` starts N of these at once, so that N sessions' decoding, jitter
buffers and Python overhead run in N processes (as N real clients would), not in the process that
measures.  A line protocol on stdin/stdout (one JSON object per stdout line) keeps them in step:

    -> {"event": "ready"}                      imported, waiting
    <- go                                      connect now (all clients get it together)
    -> {"event": "streaming", "session_id", "first_frame_s", ...}   first video frame decoded
    <- window TA TB                            measure frames received in [TA, TB] (time.monotonic,
                                               which on Linux is one clock for every process)
    -> {"event": "result", "fps", "p99_interval_ms", ...}
    <- stop                                    close the peer connection and exit

With ``--no-decode`` (what the concurrency benchmark uses by default) the client's video decoder
is replaced by one that only passes each *complete encoded frame* on, timed when the receiver
releases it: the server's work is unchanged, but N clients no longer spend the cores the server
under test needs on decoding 512x512 VP8.  Without it, frames are decoded (no pixels are kept).
An error is reported as ``{"event": "error", "error": "..."}`` and the process exits non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from urllib.parse import urlparse

import numpy as np

__all__ = ["main", "window_stats"]


def _emit(**obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def _line() -> str:
    """The next stdin line (empty string when the parent closed the pipe)."""
    return (await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)).strip()


def window_stats(times: np.ndarray, ta: float, tb: float) -> dict:
    """Receive-rate figures of the frames received in [ta, tb] (seconds, one clock).

    fps is (frames - 1) / (last - first) over the window, so it is not quantised to whole frames
    the way a count / duration would be; intervals are between consecutive received frames.
    """
    t = np.asarray(times, np.float64)
    t = t[(t >= ta) & (t <= tb)]
    if t.size < 2:
        return {"frames": int(t.size), "fps": 0.0, "p50_interval_ms": None, "p99_interval_ms": None,
                "max_interval_ms": None}
    iv = np.diff(t) * 1000.0
    return {"frames": int(t.size), "fps": float((t.size - 1) / (t[-1] - t[0])),
            "p50_interval_ms": float(np.percentile(iv, 50)), "p99_interval_ms": float(np.percentile(iv, 99)),
            "max_interval_ms": float(iv.max())}


class _NoDecode:
    """A stand-in video decoder: one tiny frame per complete encoded frame, same timestamp."""

    def __init__(self) -> None:
        import fractions

        import av

        self._frame = av.VideoFrame(16, 16, "yuv420p")
        self._time_base = fractions.Fraction(1, 90000)

    def decode(self, encoded_frame) -> list:  # noqa: ANN001 - aiortc's JitterFrame
        frame = self._frame
        frame.pts = encoded_frame.timestamp
        frame.time_base = self._time_base
        return [frame]


def skip_video_decoding() -> None:
    """Make this process's aiortc receivers pass video frames on undecoded (audio is still decoded)."""
    from aiortc import rtcrtpreceiver
    from aiortc.codecs import get_decoder

    def choose(codec):  # noqa: ANN001, ANN202
        return _NoDecode() if codec.mimeType.lower().startswith("video/") else get_decoder(codec)

    rtcrtpreceiver.get_decoder = choose


async def _run(base: str, mic_seconds: float) -> int:
    import aiohttp

    from benchmarks.bench_server_latency import burst_signal
    from benchmarks.webrtc_client import connect
    from realtime.ice import is_loopback_host, use_loopback_candidates

    if is_loopback_host(urlparse(base).hostname or ""):
        use_loopback_candidates(True)  # the server offers 127.0.0.1 only; skip gathering the rest
    mic, _ = burst_signal(mic_seconds)
    _emit(event="ready")
    if await _line() != "go":
        return 1
    async with aiohttp.ClientSession() as http:
        t_offer = time.monotonic()
        client = await connect(base, http, mic=mic, keep_frames=False)
        while not client.video:
            await asyncio.sleep(0.005)
        _emit(event="streaming", session_id=client.session_id, first_frame_s=client.video[0][0] - t_offer,
              t_first_frame=client.video[0][0])
        try:
            cmd = (await _line()).split()
            if len(cmd) != 3 or cmd[0] != "window":
                return 1
            ta, tb = float(cmd[1]), float(cmd[2])
            await asyncio.sleep(max(0.0, tb + 0.15 - time.monotonic()))  # frames released just after tb
            times = np.array([t for t, _ in client.video])
            audio = np.array([t for t, _ in client.audio])
            _emit(event="result", session_id=client.session_id, **window_stats(times, ta, tb),
                  audio_frames=int(((audio >= ta) & (audio <= tb)).sum()), frames_total=len(times))
            await _line()  # "stop" (or EOF)
        finally:
            await client.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.load_client", description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, help="server URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--mic-seconds", type=float, default=120.0,
                   help="length of the speech-burst mic signal; silence after it (default: 120)")
    p.add_argument("--no-decode", action="store_true",
                   help="time complete encoded video frames instead of decoding them (saves client CPU)")
    args = p.parse_args(argv)
    if args.no_decode:
        skip_video_decoding()
    try:
        return asyncio.run(_run(args.base, args.mic_seconds))
    except Exception as exc:  # the parent reads this line; a traceback goes to stderr (its log)
        _emit(event="error", error=f"{type(exc).__name__}: {exc}")
        raise


if __name__ == "__main__":
    raise SystemExit(main())
