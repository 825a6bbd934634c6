"""How many concurrent sessions hold 25 fps, batched frame loop vs a naive per-session path.

    python -m benchmarks.bench_concurrency [--sessions 1,2,4,8,16] [--seconds 10]
        [--scheduler batched,naive] [--json PATH] [--plot PATH]

Method.  For every scheduler and every N, a fresh server process
(``python -m benchmarks.serve --scheduler X --max-sessions 64`` on a free 127.0.0.1 port) is
started and waited for (``/healthz``); then N clients start together, each an aiortc peer in a
process of its own (``benchmarks/load_client.py``) whose mic plays 0.8 s speech bursts separated
by 1.2 s of silence.  Once every client has decoded its first frame, a common window of
``--seconds`` starts after ``--warmup`` seconds.  Over that window:

* per session, from the client: received fps ((frames - 1) / span) and the p99 interval between
  received frames (receive times, ``time.monotonic``, one clock for all processes on Linux);
* per session, from the server (``GET /api/sessions/{id}`` at both ends of the window): frames
  sent, repeated (a slot with no fresh frame: a drop), skipped and rendered, and *fresh fps*
  ((sent - repeated) / window).  A repeated slot still reaches the client as a frame, so received
  fps alone can read 25 while a third of the frames are repeats: read both;
* from ``GET /metrics`` at both ends: audio-in -> frame-out latency (the difference of the
  ``lipstream_audio_to_frame_seconds`` histograms; p50/p99 are interpolated within its buckets —
  20 ms wide up to 120 ms — so they are coarse; the mean is exact), inference time, batch size;
* server CPU (% of one core: CPU seconds of the server process over the window) and RSS
  (psutil), and server CPU per frame = CPU seconds / frames sent.

N *holds* when every session receives >= 24.5 fps with a p99 frame interval <= 60 ms.  The
result for a scheduler is the largest N such that it and every smaller N tested hold.  The
schedulers are run interleaved (N=1 batched, N=1 naive, N=2 batched, ...) so that drifting load
on a shared machine hits both alike; a scheduler's sweep stops early once two N in a row miss
the fps criterion (larger N would only be slower).  On a shared machine, a run that misses the
criterion while unrelated processes used more than ``--retry-busy-pct`` (25 %) of a core is
measured once more (the first attempt is kept in the JSON as ``discarded_attempt``).

Biases, stated.  The clients run on the same machine as the server and compete with it for the
same cores (on the 2-core build machine, N aiortc clients decoding 512x512 VP8 cost about as
much CPU as the server), so by default they do not decode: each times the complete encoded frames
its receiver releases (``load_client --no-decode``; ``--decode`` restores decoding).  Even so the
sustainable N measured here is a floor for a server with the machine to itself.  Their CPU, and the whole machine's (other users' work included), is recorded
for every N.  The aiortc client's video receiver releases a frame only when the next frame's
first packet arrives, which adds client-side jitter to the intervals.  Mic speech is real time,
so the server's audio path (Opus decode, resampling, mel, VAD) is loaded as in service.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import tempfile
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

import numpy as np

from benchmarks.machine import RESULTS_DIR, machine_info, publish, save_figure

REPO = Path(__file__).resolve().parents[1]
MIN_FPS = 24.5
MAX_P99_INTERVAL_MS = 60.0
SCHEDULERS = ("batched", "naive")
# how the server is started (then "serve --host ... ARGS"); a module constant so an experiment can
# run a patched server (e.g. a wrapper script) without changing the benchmark
SERVER_CMD = [sys.executable, "-m", "benchmarks.serve"]  # lipstream serve + --scheduler

__all__ = ["main", "run", "print_table", "plot", "server_process", "ServerProcess", "parse_metrics",
           "histogram_quantile"]


# -- the server process ---------------------------------------------------------------------
@dataclass
class ServerProcess:
    proc: asyncio.subprocess.Process
    base: str
    log_path: Path
    startup_s: float  # process start -> /healthz answers

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


@asynccontextmanager
async def server_process(*args: str, log_dir: Path, timeout_s: float = 120.0) -> AsyncIterator[ServerProcess]:
    """``lipstream serve ARGS`` on a free loopback port, up once ``/healthz`` answers; SIGTERM at the end.

    SIGTERM, not SIGINT: a background process started from a non-interactive shell ignores SIGINT,
    and the server closes its sessions cleanly on SIGTERM.
    """
    import aiohttp

    port = free_port()
    log_path = Path(log_dir) / f"server-{port}.log"
    cmd = [*SERVER_CMD, "--host", "127.0.0.1", "--port", str(port), *args]
    with open(log_path, "wb") as log:
        t0 = time.monotonic()
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=log, stderr=log, cwd=REPO, env=_env())
    base = f"http://127.0.0.1:{port}"
    server = ServerProcess(proc, base, log_path, 0.0)
    try:
        async with aiohttp.ClientSession() as http:
            while True:
                if proc.returncode is not None:
                    raise RuntimeError(f"the server exited ({proc.returncode}):\n{server.log_tail()}")
                if time.monotonic() - t0 > timeout_s:
                    raise RuntimeError(f"the server did not answer /healthz in {timeout_s:.0f} s:\n{server.log_tail()}")
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with http.get(f"{base}/healthz", timeout=aiohttp.ClientTimeout(total=2)) as r:
                        if r.status == 200:
                            break
                await asyncio.sleep(0.05)
        server.startup_s = time.monotonic() - t0
        yield server
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()


# -- metrics --------------------------------------------------------------------------------
def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {'name{labels}': value} (comments dropped)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            out[key] = float(value)
    return out


def _buckets(m: dict[str, float], name: str) -> list[tuple[float, float]]:
    prefix = f'{name}_bucket{{le="'
    pairs = [(float(k[len(prefix):-2]), v) for k, v in m.items() if k.startswith(prefix)]
    return sorted(pairs)


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus-style quantile from cumulative (upper bound, count) buckets: linear within a bucket.

    A quantile in the +Inf bucket returns the largest finite bound (as Prometheus does).
    """
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    lo_bound, lo_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if np.isinf(bound):
                return lo_bound
            if count == lo_count:
                return bound
            return lo_bound + (bound - lo_bound) * (rank - lo_count) / (count - lo_count)
        lo_bound, lo_count = bound, count
    return lo_bound


def _diff(a: dict[str, float], b: dict[str, float], key: str) -> float:
    return b.get(key, 0.0) - a.get(key, 0.0)


# -- one configuration ----------------------------------------------------------------------
CLIENT_ARGS: list[str] = ["--no-decode"]  # run() sets it from decode=


class _ClientProc:
    """A load_client process and its line protocol."""

    def __init__(self, proc: asyncio.subprocess.Process, log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path

    @classmethod
    async def start(cls, base: str, mic_seconds: float, log_path: Path) -> _ClientProc:
        with open(log_path, "wb") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "benchmarks.load_client", "--base", base, "--mic-seconds", f"{mic_seconds:.0f}",
                *CLIENT_ARGS,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log, cwd=REPO, env=_env())
        return cls(proc, log_path)

    async def expect(self, event: str) -> dict:
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                tail = self.log_path.read_text(errors="replace")[-1500:] if self.log_path.exists() else ""
                raise RuntimeError(f"a client exited before {event!r}:\n{tail}")
            with contextlib.suppress(json.JSONDecodeError):
                msg = json.loads(line)
                if msg.get("event") == "error":
                    raise RuntimeError(f"a client failed: {msg.get('error')}")
                if msg.get("event") == event:
                    return msg

    def send(self, line: str) -> None:
        if self.proc.returncode is None and self.proc.stdin is not None:
            with contextlib.suppress(ConnectionError):
                self.proc.stdin.write((line + "\n").encode())

    async def finish(self) -> None:
        self.send("stop")
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except asyncio.TimeoutError:
            self.proc.kill()
            await self.proc.wait()


async def _snapshot(http, base: str, sids: list[str], server_pid: int, client_pids: list[int]) -> dict:  # noqa: ANN001
    import psutil

    def cpu(pid: int) -> float:
        try:
            t = psutil.Process(pid).cpu_times()
            return t.user + t.system
        except psutil.Error:
            return float("nan")

    t = time.monotonic()
    snap = {"t": t, "server_cpu_s": cpu(server_pid), "clients_cpu_s": sum(cpu(p) for p in client_pids),
            "machine": psutil.cpu_times(), "self_cpu_s": cpu(os.getpid())}

    async def get(path: str):  # noqa: ANN202
        async with http.get(f"{base}{path}") as r:
            return await (r.text() if path == "/metrics" else r.json())

    results = await asyncio.gather(get("/metrics"), get("/healthz"), *(get(f"/api/sessions/{s}") for s in sids))
    snap["metrics"] = parse_metrics(results[0])
    snap["health"] = results[1]
    snap["sessions"] = {s: r for s, r in zip(sids, results[2:])}
    return snap


def _machine_busy(a, b) -> float:  # noqa: ANN001
    """Whole-machine CPU in use over the window, in cores (everyone's work, other users' too)."""
    idle = (b.idle + getattr(b, "iowait", 0.0)) - (a.idle + getattr(a, "iowait", 0.0))
    total = sum(b) - sum(a)
    cores = os.cpu_count() or 1
    return cores * (1.0 - idle / total) if total > 0 else float("nan")


async def measure(scheduler: str, n: int, seconds: float, *, warmup_s: float = 2.0, codec: str = "vp8",
                  engine: str = "auto", log_dir: Path) -> dict:
    """One server process, N client processes, one common measurement window; per-session figures."""
    import aiohttp
    import psutil

    mic_seconds = 90.0 + warmup_s + seconds + 2 * n
    async with server_process("--scheduler", scheduler, "--max-sessions", "64", "--codec", codec,
                              "--engine", engine, log_dir=log_dir) as server:
        clients = [await _ClientProc.start(server.base, mic_seconds, Path(log_dir) / f"client-{scheduler}-{n}-{i}.log")
                   for i in range(n)]
        try:
            await asyncio.wait_for(asyncio.gather(*(c.expect("ready") for c in clients)), 60 + 5 * n)
            t_go = time.monotonic()
            for c in clients:
                c.send("go")
            streaming = await asyncio.wait_for(asyncio.gather(*(c.expect("streaming") for c in clients)), 30 + 3 * n)
            all_streaming_s = time.monotonic() - t_go
            sids = [s["session_id"] for s in streaming]
            ta = time.monotonic() + warmup_s
            tb = ta + seconds
            for c in clients:
                c.send(f"window {ta:.6f} {tb:.6f}")
            pids = [c.proc.pid for c in clients]
            server_ps = psutil.Process(server.pid)
            rss: list[int] = []
            async with aiohttp.ClientSession() as http:
                await asyncio.sleep(max(0.0, ta - time.monotonic()))
                a = await _snapshot(http, server.base, sids, server.pid, pids)
                while time.monotonic() < tb - 0.25:
                    with contextlib.suppress(psutil.Error):
                        rss.append(server_ps.memory_info().rss)
                    await asyncio.sleep(min(0.5, max(0.0, tb - time.monotonic())))
                await asyncio.sleep(max(0.0, tb - time.monotonic()))
                b = await _snapshot(http, server.base, sids, server.pid, pids)
                with contextlib.suppress(psutil.Error):
                    rss.append(server_ps.memory_info().rss)
                results = await asyncio.wait_for(asyncio.gather(*(c.expect("result") for c in clients)), 30)
        finally:
            await asyncio.gather(*(c.finish() for c in clients), return_exceptions=True)
        startup_s = server.startup_s
    return _figures(scheduler, n, seconds, a, b, streaming, results, rss, startup_s, all_streaming_s)


def _figures(scheduler: str, n: int, seconds: float, a: dict, b: dict, streaming: list[dict], results: list[dict],
             rss: list[int], startup_s: float, all_streaming_s: float) -> dict:
    wall = b["t"] - a["t"]
    ma, mb = a["metrics"], b["metrics"]
    by_sid = {r["session_id"]: r for r in results}
    sessions = []
    for st in streaming:
        sid = st["session_id"]
        sa, sb, cl = a["sessions"][sid], b["sessions"][sid], by_sid[sid]
        sessions.append({
            "session_id": sid, "fps": cl["fps"], "frames_received": cl["frames"],
            "p50_interval_ms": cl["p50_interval_ms"], "p99_interval_ms": cl["p99_interval_ms"],
            "max_interval_ms": cl["max_interval_ms"], "audio_frames_received": cl["audio_frames"],
            "offer_to_first_frame_s": st["first_frame_s"],
            "frames_sent": sb["frames_sent"] - sa["frames_sent"],
            "frames_repeated": sb["frames_repeated"] - sa["frames_repeated"],
            "frames_skipped": sb["frames_skipped"] - sa["frames_skipped"],
            "frames_rendered": sb["frames_rendered"] - sa["frames_rendered"],
            "audio_to_frame_ms_median_last50": sb.get("audio_to_frame_ms"),
        })
        # a repeated slot still reaches the client as a frame: fresh fps is what carries new lips
        sessions[-1]["fresh_fps"] = (sessions[-1]["frames_sent"] - sessions[-1]["frames_repeated"]) / wall
    name = "lipstream_audio_to_frame_seconds"
    before = dict(_buckets(ma, name))
    lat = [(bound, count - before.get(bound, 0.0)) for bound, count in _buckets(mb, name)]
    lat_count = _diff(ma, mb, f"{name}_count")
    sent = _diff(ma, mb, "lipstream_frames_sent_total")
    rendered = sum(s["frames_rendered"] for s in sessions)
    server_cpu = b["server_cpu_s"] - a["server_cpu_s"]
    inf_n = _diff(ma, mb, "lipstream_inference_seconds_count")
    fps = [s["fps"] for s in sessions]
    p99 = [s["p99_interval_ms"] if s["p99_interval_ms"] is not None else float("inf") for s in sessions]
    fps_ok = bool(min(fps) >= MIN_FPS)
    summary = {
        "min_fps": min(fps), "mean_fps": float(np.mean(fps)), "max_p99_interval_ms": max(p99),
        "min_fresh_fps": min(s["fresh_fps"] for s in sessions),
        "frames_sent": sent, "frames_rendered": rendered,
        "frames_repeated": _diff(ma, mb, "lipstream_frames_dropped_total"),
        "frames_skipped": _diff(ma, mb, "lipstream_frames_skipped_total"),
        "repeated_pct": 100.0 * _diff(ma, mb, "lipstream_frames_dropped_total") / sent if sent else None,
        "ticks_busy": _diff(ma, mb, "lipstream_ticks_busy_total"),
        "audio_to_frame_ms": {
            "n": int(lat_count),
            "mean": 1000 * _diff(ma, mb, f"{name}_sum") / lat_count if lat_count else None,
            "p50": _ms(histogram_quantile(0.5, lat)), "p99": _ms(histogram_quantile(0.99, lat)),
            "note": "p50/p99 interpolated within the server histogram's buckets; mean exact"},
        "inference_calls": inf_n,
        "inference_ms_mean": 1000 * _diff(ma, mb, "lipstream_inference_seconds_sum") / inf_n if inf_n else None,
        "batch_size_mean": (_diff(ma, mb, "lipstream_batch_size_sum") / _diff(ma, mb, "lipstream_batch_size_count")
                            if _diff(ma, mb, "lipstream_batch_size_count") else None),
        "server_cpu_pct": 100.0 * server_cpu / wall,
        "server_cpu_ms_per_frame_sent": 1000.0 * server_cpu / sent if sent else None,
        "server_cpu_ms_per_frame_rendered": 1000.0 * server_cpu / rendered if rendered else None,
        "server_rss_mb": rss[-1] / 2**20 if rss else None,
        "server_rss_max_mb": max(rss) / 2**20 if rss else None,
        "clients_cpu_pct": 100.0 * (b["clients_cpu_s"] - a["clients_cpu_s"]) / wall,
        "bench_process_cpu_pct": 100.0 * (b["self_cpu_s"] - a["self_cpu_s"]) / wall,
        "machine_busy_cores": _machine_busy(a["machine"], b["machine"]),
        "server_startup_s": startup_s, "all_clients_streaming_s": all_streaming_s, "window_s": wall,
    }
    summary["others_cpu_pct"] = (100.0 * summary["machine_busy_cores"] - summary["server_cpu_pct"]
                                 - summary["clients_cpu_pct"] - summary["bench_process_cpu_pct"])
    holds = fps_ok and summary["max_p99_interval_ms"] <= MAX_P99_INTERVAL_MS
    engine, model = engine_info(mb)
    return {"scheduler": scheduler, "n": n, "seconds": seconds, "holds": holds, "fps_ok": fps_ok,
            "engine": engine, "model": model, "summary": summary, "sessions": sessions}


def _ms(x: float | None) -> float | None:
    return None if x is None else 1000.0 * x


# -- the sweep ------------------------------------------------------------------------------
async def _attempt(sched: str, n: int, seconds: float, warmup_s: float, codec: str, engine: str,
                   log_dir: Path) -> dict:
    try:
        return await measure(sched, n, seconds, warmup_s=warmup_s, codec=codec, engine=engine, log_dir=log_dir)
    except Exception as exc:  # a run that could not even stream fails the criterion
        r = {"scheduler": sched, "n": n, "seconds": seconds, "holds": False, "fps_ok": False,
             "error": f"{type(exc).__name__}: {exc}"[:3000], "summary": None, "sessions": []}
        print(f"\n{sched} N={n} failed: {r['error']}", file=sys.stderr)
        return r


def _disturbed(r: dict, retry_busy_pct: float) -> bool:
    """A miss while unrelated processes used more than ``retry_busy_pct`` % of a core: not the server's."""
    s = r.get("summary")
    return bool(retry_busy_pct > 0 and not r["holds"] and s and s["others_cpu_pct"] > retry_busy_pct)


async def _sweep(sessions: list[int], seconds: float, schedulers: list[str], warmup_s: float, codec: str,
                 engine: str, progress: bool, retry_busy_pct: float) -> tuple[list[dict], dict[str, int | None]]:
    from realtime.progress import ProgressLine

    line = ProgressLine("concurrency", unit="runs") if progress else None
    total = len(sessions) * len(schedulers)
    done = 0
    runs: list[dict] = []
    misses = {s: 0 for s in schedulers}
    stopped: dict[str, int | None] = {s: None for s in schedulers}
    with tempfile.TemporaryDirectory(prefix="lipstream-bench-") as log_dir:
        for n in sessions:
            for sched in schedulers:
                if stopped[sched] is not None:
                    continue
                if line:
                    line.label = f"concurrency: {sched} N={n}"
                    line(done, total)
                r = await _attempt(sched, n, seconds, warmup_s, codec, engine, Path(log_dir))
                if _disturbed(r, retry_busy_pct):  # measure again, once; the first attempt is kept for the record
                    first = {"others_cpu_pct": r["summary"]["others_cpu_pct"], "min_fps": r["summary"]["min_fps"],
                             "max_p99_interval_ms": r["summary"]["max_p99_interval_ms"], "holds": r["holds"]}
                    r = await _attempt(sched, n, seconds, warmup_s, codec, engine, Path(log_dir))
                    r["discarded_attempt"] = first
                runs.append(r)
                done += 1
                misses[sched] = 0 if r["fps_ok"] else misses[sched] + 1
                left = sum(1 for m in sessions if m > n)
                if misses[sched] >= 2 and left:
                    stopped[sched] = n
                    done += left
        if line:
            line.label = "concurrency"
            line(total, total)
    return runs, stopped


def _summaries(runs: list[dict], sessions: list[int], schedulers: list[str], stopped: dict[str, int | None]) -> dict:
    out: dict = {}
    for sched in schedulers:
        mine = sorted((r for r in runs if r["scheduler"] == sched), key=lambda r: r["n"])
        best = 0
        for r in mine:  # largest N such that it and every smaller N tested hold
            if not r["holds"]:
                break
            best = r["n"]
        out[sched] = {
            "max_sessions": best,
            "largest_n_holding": max((r["n"] for r in mine if r["holds"]), default=0),
            "stopped_early_after_n": stopped.get(sched),
            "holds": {str(r["n"]): r["holds"] for r in mine},
            "min_fps": {str(r["n"]): r["summary"]["min_fps"] for r in mine if r["summary"]},
            "max_p99_interval_ms": {str(r["n"]): r["summary"]["max_p99_interval_ms"] for r in mine if r["summary"]},
            "server_cpu_ms_per_frame": {str(r["n"]): r["summary"]["server_cpu_ms_per_frame_sent"]
                                        for r in mine if r["summary"]},
            "server_cpu_pct": {str(r["n"]): r["summary"]["server_cpu_pct"] for r in mine if r["summary"]},
        }
    if "batched" in out and "naive" in out:
        b, nv = out["batched"], out["naive"]
        out["batched_over_naive_max_sessions"] = (b["max_sessions"] / nv["max_sessions"]
                                                  if nv["max_sessions"] else None)
        out["naive_over_batched_cpu_per_frame"] = {
            k: nv["server_cpu_ms_per_frame"][k] / v for k, v in b["server_cpu_ms_per_frame"].items()
            if v and nv["server_cpu_ms_per_frame"].get(k)}
    return out


def run(sessions: list[int] | tuple[int, ...] = (1, 2, 4, 8, 16), seconds: float = 10.0,
        schedulers: list[str] | tuple[str, ...] = SCHEDULERS, *, warmup_s: float = 2.0, codec: str = "vp8",
        engine: str = "auto", progress: bool = True, retry_busy_pct: float = 25.0, decode: bool = False) -> dict:
    """Sweep N for every scheduler (interleaved); returns the result document (see the module doc)."""
    CLIENT_ARGS[:] = [] if decode else ["--no-decode"]
    sessions = sorted(set(int(n) for n in sessions))
    schedulers = list(schedulers)
    t0 = time.monotonic()
    runs, stopped = asyncio.run(_sweep(sessions, seconds, schedulers, warmup_s, codec, engine, progress,
                                       retry_busy_pct))
    engine_name, model = _engine_of(runs)
    result = {
        "benchmark": "concurrency", "machine": machine_info(), "engine": engine_name, "model": model,
        "codec": codec,
        "settings": {
            "sessions": sessions, "seconds": seconds, "warmup_s": warmup_s, "schedulers": schedulers,
            "engine_arg": engine,
            "criterion": {"min_fps_every_session": MIN_FPS, "max_p99_interval_ms": MAX_P99_INTERVAL_MS},
            "early_stop": "a scheduler's sweep stops after two N in a row miss the fps criterion",
            "retry": (f"a run that misses the criterion while other processes (not server, clients or this "
                      f"benchmark) used > {retry_busy_pct:g} % of a core is measured again once; the first "
                      "attempt is kept as discarded_attempt" if retry_busy_pct > 0 else "none"),
            "order": "interleaved: for each N, every scheduler in turn; a fresh server process per run",
            "server": "python -m benchmarks.serve --host 127.0.0.1 --scheduler X --max-sessions 64",
            "clients": ("one aiortc client process per session (benchmarks/load_client.py) on the SAME "
                        "machine: clients compete with the server for the same cores (see clients_cpu_pct, "
                        "others_cpu_pct), so the sustainable N is a floor"),
            "client_video": ("decoded (aiortc VP8 decoder)" if decode else
                             "not decoded: complete encoded frames timed at release from the jitter buffer "
                             "(load_client --no-decode), so clients take less of the server's cores"),
            "mic": "0.8 s speech bursts (realtime/samples/hello.wav) separated by 1.2 s of silence, real time",
            "cores": os.cpu_count(), "loadavg_at_end": list(os.getloadavg()),
            "wall_s": time.monotonic() - t0,
        },
        "max_sessions": None,  # filled below: {scheduler: N}, the headline
        "summary": _summaries(runs, sessions, schedulers, stopped),
        "runs": runs,
    }
    result["max_sessions"] = {s: result["summary"][s]["max_sessions"] for s in schedulers}
    return result


def _engine_of(runs: list[dict]) -> tuple[str | None, str | None]:
    """The engine and model the server reported (its /metrics info line), from the first run that has it."""
    for r in runs:
        if r.get("engine"):
            return r["engine"], r["model"]
    return None, None


def engine_info(metrics: dict[str, float]) -> tuple[str | None, str | None]:
    """(engine, model) from the parsed ``lipstream_engine_info`` line."""
    import re

    for key in metrics:
        if key.startswith("lipstream_engine_info{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', key))
            return labels.get("engine"), labels.get("model")
    return None, None


# -- output ---------------------------------------------------------------------------------
def _f(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def print_table(result: dict) -> None:
    """The per-run table and the comparison, on stdout."""
    print(f"\nconcurrency: engine {result['engine']}, model {result['model']}, {result['codec']}, "
          f"{result['settings']['seconds']:.0f} s per run, {result['settings']['cores']} cores shared with the clients")
    head = (f"{'scheduler':<9} {'N':>3} {'min fps':>7} {'fresh':>5} {'p99 iv':>7} {'rep %':>6} {'skip':>5} "
            f"{'a2f p50':>7} {'a2f p99':>7} {'srv CPU%':>8} {'ms/frame':>8} {'RSS MB':>7} {'cli CPU%':>8} "
            f"{'other%':>6}  holds")
    print(head)
    print("-" * len(head))
    for r in sorted(result["runs"], key=lambda r: (r["n"], r["scheduler"])):
        s = r["summary"]
        if s is None:
            print(f"{r['scheduler']:<9} {r['n']:>3}  failed: {r.get('error', '')[:80]}")
            continue
        a2f = s["audio_to_frame_ms"]
        print(f"{r['scheduler']:<9} {r['n']:>3} {s['min_fps']:>7.2f} {s['min_fresh_fps']:>5.1f} "
              f"{s['max_p99_interval_ms']:>7.1f} "
              f"{_f(s['repeated_pct'], '6.1f')} {s['frames_skipped']:>5.0f} {_f(a2f['p50'], '7.0f')} "
              f"{_f(a2f['p99'], '7.0f')} {s['server_cpu_pct']:>8.0f} {_f(s['server_cpu_ms_per_frame_sent'], '8.2f')} "
              f"{_f(s['server_rss_mb'], '7.0f')} {s['clients_cpu_pct']:>8.0f} {s['others_cpu_pct']:>6.0f}  "
              f"{'yes' if r['holds'] else 'no'}")
    sm = result["summary"]
    print(f"\nholds = every session >= {MIN_FPS} fps and p99 frame interval <= {MAX_P99_INTERVAL_MS:.0f} ms "
          "(received frames, repeats included); fresh = slowest session's frames/s that were not repeats; "
          "rep % = repeated slots; ms/frame = server CPU ms per frame sent")
    for sched in result["settings"]["schedulers"]:
        x = sm[sched]
        stop = f" (sweep stopped after N={x['stopped_early_after_n']})" if x["stopped_early_after_n"] else ""
        print(f"{sched}: max sessions at 25 fps = {x['max_sessions']}{stop}")
    if "batched_over_naive_max_sessions" in sm:
        ratio = sm["batched_over_naive_max_sessions"]
        print(f"batched / naive sustainable sessions: {_f(ratio, '.2f') if ratio is not None else 'n/a (naive held none)'}")
        cpu = sm["naive_over_batched_cpu_per_frame"]
        if cpu:
            print("naive / batched server CPU per frame: " + ", ".join(f"N={k}: {v:.2f}x" for k, v in cpu.items()))


def plot(result: dict, path: Path) -> None:
    """fps and p99 interval vs N, batched vs naive, and server CPU per frame (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for sched, style in zip(result["settings"]["schedulers"], ("o-", "s--", "^:")):
        mine = sorted((r for r in result["runs"] if r["scheduler"] == sched and r["summary"]), key=lambda r: r["n"])
        ns = [r["n"] for r in mine]
        line, = axes[0].plot(ns, [r["summary"]["min_fps"] for r in mine], style, label=f"{sched}: received")
        axes[0].plot(ns, [r["summary"]["min_fresh_fps"] for r in mine], style, color=line.get_color(), alpha=0.4,
                     label=f"{sched}: fresh (not repeats)")
        axes[1].plot(ns, [r["summary"]["max_p99_interval_ms"] for r in mine], style, label=sched)
        axes[2].plot(ns, [r["summary"]["server_cpu_ms_per_frame_sent"] for r in mine], style, label=sched)
    axes[0].axhline(MIN_FPS, color="grey", lw=0.8)
    axes[1].axhline(MAX_P99_INTERVAL_MS, color="grey", lw=0.8)
    axes[1].set_yscale("log")
    axes[1].set_yticks([40, 60, 100, 200, 400, 1000], ["40", "60", "100", "200", "400", "1000"])
    titles = ("fps of the slowest session", "p99 frame interval, ms (max over sessions)",
              "server CPU ms per frame sent")
    ns_all = sorted({r["n"] for r in result["runs"]})
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=10)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ns_all, [str(n) for n in ns_all])
        ax.minorticks_off()
        ax.set_xlabel("concurrent sessions N")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    m = result["machine"]
    fig.suptitle(f"lipstream concurrency: {m['cpu']} ({m['cores']} cores, clients on the same cores), "
                 f"{result['engine']}, {result['codec']}", fontsize=10)
    save_figure(fig, path)


def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("session counts must be >= 1")
    return values


def _schedulers(text: str) -> list[str]:
    values = [x.strip() for x in text.split(",") if x.strip()]
    bad = [v for v in values if v not in SCHEDULERS]
    if not values or bad:
        raise argparse.ArgumentTypeError(f"schedulers are {', '.join(SCHEDULERS)}; got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_concurrency",
        description="Concurrent sessions at 25 fps: the batched frame loop vs a naive per-session path, "
                    "same run, server in its own process, one aiortc client process per session.",
        epilog="Clients run on the same machine and compete with the server for its cores; the JSON records "
               "their CPU. A scheduler's sweep stops after two N in a row miss the fps criterion.")
    p.add_argument("--sessions", type=_ints, default=[1, 2, 4, 8, 16],
                   help="comma-separated session counts N (default: 1,2,4,8,16)")
    p.add_argument("--seconds", type=float, default=10.0, help="measurement window per run, s (default: 10)")
    p.add_argument("--warmup", type=float, default=2.0,
                   help="seconds after every client has its first frame before measuring (default: 2)")
    p.add_argument("--scheduler", type=_schedulers, default=list(SCHEDULERS),
                   help="comma-separated: batched,naive (default: both)")
    p.add_argument("--codec", default="vp8", choices=("vp8", "h264"), help="server video codec (default: vp8)")
    p.add_argument("--engine", default="auto", help="server --engine (default: auto)")
    p.add_argument("--json", type=Path, default=RESULTS_DIR / "concurrency.json",
                   help="result file (default: benchmarks/results/concurrency.json)")
    p.add_argument("--plot", type=Path, default=RESULTS_DIR / "concurrency.png",
                   help="plot file (default: benchmarks/results/concurrency.png)")
    p.add_argument("--retry-busy-pct", type=float, default=25.0,
                   help="measure a failed run again (once) when unrelated processes used more than this %% of "
                        "a core during it, as on a shared machine (default: 25; 0 = never)")
    p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    p.add_argument("--decode", action="store_true",
                   help="clients decode the video as a browser would (default: they time complete encoded "
                        "frames, leaving the cores to the server under test)")
    args = p.parse_args(argv)
    if args.seconds <= 0:
        p.error("--seconds must be positive")
    result = run(args.sessions, args.seconds, args.scheduler, warmup_s=args.warmup, codec=args.codec,
                 engine=args.engine, progress=not args.no_progress, retry_busy_pct=args.retry_busy_pct,
                 decode=args.decode)
    publish(result, args.json, args.plot, print_table, plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
