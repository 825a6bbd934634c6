"""Where a session's server CPU goes, thread by thread, in ms per frame sent.

    python -m benchmarks.bench_cpu_split [--sessions 1,3] [--seconds 20] [--repeats 2] [--json PATH]

The capacity limit of one server process is its CPU per frame: N sessions need N x 25 x that per
second.  This starts ``lipstream serve`` in its own process and N ``load_client`` processes
(aiortc peers, mics playing speech bursts, video not decoded), as ``bench_concurrency`` does, and
reads every server thread's CPU time (``psutil``: user + system, from ``/proc``) at both ends of a
window, with the frames sent in between (``/metrics``).  Threads are named by ``py-spy dump``
when py-spy is installed (Python's thread names are not visible to the OS; without it they are
listed by id).  Native threads with no Python frames (ONNX Runtime's pool, OpenCV's workers) show
up as ``native``.

What each named thread does in the server: ``MainThread`` is the asyncio loop (aiortc's RTP/SRTP,
Opus encode of the returned speech, the mic's Opus decode and resampling, the front end's mel,
the frame loop); ``lipstream-render-*`` is the render worker (engine call, composite, idle motion,
I420); ``uvloop_*`` (the loop's default executor) runs aiortc's VP8 encoder; ``audio-decoder``
is aiortc's per-receiver decode thread.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_concurrency import _ClientProc, parse_metrics, server_process
from benchmarks.machine import RESULTS_DIR, machine_info, write_result

_SPY_LINE = re.compile(r'^Thread (0x[0-9a-fA-F]+|\d+) \((?:idle|active)\): "(.*)"')


def thread_names(pid: int) -> dict[int, str]:
    """OS thread id -> Python thread name, from ``py-spy dump`` ({} without py-spy)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        return {}
    try:
        out = subprocess.run([spy, "dump", "--pid", str(pid), "--nonblocking"], capture_output=True,
                             text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    names = {}
    for line in out.splitlines():
        m = _SPY_LINE.match(line)
        if m:
            tid = int(m.group(1), 16) if m.group(1).startswith("0x") else int(m.group(1))
            names[tid] = m.group(2)
    return names


def _thread_cpu(pid: int) -> dict[int, float]:
    import psutil

    return {t.id: t.user_time + t.system_time for t in psutil.Process(pid).threads()}


def _group(name: str) -> str:
    """Threads of one kind together: uvloop_3 -> uvloop_*, audio-decoder (x N) -> audio-decoder."""
    return re.sub(r"_\d+$", "_*", re.sub(r"-\d+$", "-*", name))


async def measure(n: int, seconds: float, log_dir: Path, warmup_s: float = 8.0) -> dict:
    import aiohttp

    async with server_process("--max-sessions", "64", log_dir=log_dir) as server:
        clients = [await _ClientProc.start(server.base, 60.0 + warmup_s + seconds, log_dir / f"client-{n}-{i}.log")
                   for i in range(n)]
        try:
            await asyncio.wait_for(asyncio.gather(*(c.expect("ready") for c in clients)), 60 + 5 * n)
            for c in clients:
                c.send("go")
            await asyncio.wait_for(asyncio.gather(*(c.expect("streaming") for c in clients)), 30 + 3 * n)
            await asyncio.sleep(warmup_s)
            async with aiohttp.ClientSession() as http:
                async def frames_sent() -> float:
                    async with http.get(f"{server.base}/metrics") as r:
                        return parse_metrics(await r.text()).get("lipstream_frames_sent_total", 0.0)

                f0, cpu0, t0 = await frames_sent(), _thread_cpu(server.pid), time.monotonic()
                await asyncio.sleep(seconds)
                f1, cpu1, t1 = await frames_sent(), _thread_cpu(server.pid), time.monotonic()
            names = await asyncio.to_thread(thread_names, server.pid)
        finally:
            for c in clients:
                c.send("window 0 0")  # the client's protocol: then "stop"
            await asyncio.gather(*(c.finish() for c in clients), return_exceptions=True)
    frames = f1 - f0
    per: dict[str, float] = {}
    for tid, cpu in cpu1.items():
        used = cpu - cpu0.get(tid, 0.0)
        if used <= 0:
            continue
        label = _group(names.get(tid, "native" if names else f"tid {tid}"))
        if tid == server.pid:
            label = "MainThread"
        per[label] = per.get(label, 0.0) + used
    ms = {k: round(1000 * v / max(frames, 1), 2) for k, v in sorted(per.items(), key=lambda kv: -kv[1])}
    total = sum(per.values())
    return {"sessions": n, "seconds": round(t1 - t0, 2), "frames_sent": frames, "fps_per_session": round(frames / (t1 - t0) / n, 2),
            "server_cpu_pct": round(100 * total / (t1 - t0), 1), "ms_per_frame": round(1000 * total / max(frames, 1), 2),
            "ms_per_frame_by_thread": ms, "named_by": "py-spy" if names else "thread id"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_cpu_split", description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", default="1,3", help="comma list of session counts (default: 1,3)")
    p.add_argument("--seconds", type=float, default=20.0, help="measured window per run (default: 20)")
    p.add_argument("--repeats", type=int, default=2, help="runs per session count (default: 2)")
    p.add_argument("--json", type=Path, default=RESULTS_DIR / "cpu_split.json")
    args = p.parse_args(argv)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(x) for x in args.sessions.split(",")):
            for r in range(args.repeats):
                run = asyncio.run(measure(n, args.seconds, Path(tmp)))
                runs.append(run)
                split = ", ".join(f"{k} {v:.2f}" for k, v in run["ms_per_frame_by_thread"].items())
                print(f"N={n} run {r + 1}: {run['ms_per_frame']:.2f} ms CPU per frame ({run['server_cpu_pct']:.0f} % "
                      f"of a core, {run['fps_per_session']:.2f} fps per session): {split}")
    result = {"benchmark": "cpu_split", "machine": machine_info(),
              "settings": {"sessions": args.sessions, "seconds": args.seconds, "repeats": args.repeats}, "runs": runs}
    write_result(result, args.json)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
