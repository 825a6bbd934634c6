"""The soak: N live mic sessions against one server process for a long time.

    python -m benchmarks.bench_soak [--seconds 3600] [--sessions 4] [--json PATH]
    lipstream bench --long --only soak            # the same, one hour, four sessions

The server is ``python -m benchmarks.serve`` (``lipstream serve``) in a process of its own, so
its memory, file descriptors and threads are its own; N aiortc clients in this process each play
speech bursts (0.8 s of the bundled sample, 1.2 s apart, a 20 s cycle of different bursts, looped)
into their mic and decode the avatar.  Every ``--sample-every`` seconds: the server's RSS, open
file descriptors and threads, the machine's load average, and per session the server's audio
backlog and frame counters.  Reported:

* RSS at the start (once every session has streamed ``--warmup`` seconds) and the end, growth
  in MiB and % (goal: under 5 %), and file descriptors and threads at start and end;
* A/V skew per burst at each client (onset of the returned sound minus onset of the returned
  mouth motion, by receive time; positive = sound after lips), its median per window and its
  least-squares drift in ms per minute;
* the server's audio backlog (speech queued in each session's audio track) per window: a skew
  that drifts on the server side shows here first;
* received fps, and repeated frame slots (the server's ``lipstream_frames_dropped``).

The skew at an aiortc client includes its video receiver's hold (a frame is released when the
next frame's first packet arrives, ~40 ms), so "sound 30-50 ms before the lips" is this client's
constant, not the server's; what matters in a soak is that it does not move.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np
import psutil

from benchmarks.bench_server_latency import BURST_S, GAP_S, _onsets, _pair_with_time, _slope_per_min, burst_signal, \
    pcm_rms
from benchmarks.machine import RESULTS_DIR, machine_info, publish, save_figure, summarize_ms

CYCLE_S = 20.0  # the looped mic signal: 10 bursts of different speech


def dark_share_y(crop: np.ndarray) -> float:
    """The mouth's dark (cavity) pixels in a Y-plane crop (Y < 76 ~ the RGB luma < 70 of
    ``bench_server_latency.dark_share``, in video range)."""
    return float((crop < 76).mean())


def _server_sample(proc: psutil.Process) -> dict:
    with proc.oneshot():
        return {"rss_mb": proc.memory_info().rss / 2**20, "fds": proc.num_fds(), "threads": proc.num_threads()}


async def _session_sample(http: aiohttp.ClientSession, base: str, sid: str) -> dict | None:
    """The server's account of one session; None once it has ended."""
    async with http.get(f"{base}/api/sessions/{sid}") as r:
        if r.status != 200:
            return None
        d = await r.json()
    return {"backlog_ms": 1000 * d["audio_backlog_s"], "sent": d["frames_sent"], "repeated": d["frames_repeated"]}


def _skew(client, t_begin: float) -> list[tuple[float, float]]:  # noqa: ANN001 - webrtc_client.Client
    """(burst time since the start, audio onset - lip onset) for each burst of one client."""
    v_times = np.array([t for t, _ in client.video])
    opening = np.array([v for _, v in client.video])
    a_times = np.array([t for t, _ in client.audio])
    a_rms = np.array([v for _, v in client.audio])
    if v_times.size < 10 or a_times.size < 10:
        return []
    lo, hi = np.percentile(opening, [10, 95])
    video_on = _onsets(v_times, opening, threshold=lo + 0.3 * max(hi - lo, 0.01))
    audio_on = _onsets(a_times, a_rms, threshold=0.3 * np.percentile(a_rms, 95))
    return [(t - t_begin, d) for t, d in _pair_with_time(video_on, audio_on)]


def _windows(pairs: list[tuple[float, float]], seconds: float, n: int = 6) -> list[dict]:
    """Median (ms) of ``pairs`` (t, value s) in ``n`` equal windows of the run."""
    out, w = [], seconds / n
    for i in range(n):
        vals = [d for t, d in pairs if i * w <= t < (i + 1) * w]
        out.append({"from_s": round(i * w), "to_s": round((i + 1) * w), "n": len(vals),
                    "median_ms": round(1000 * float(np.median(vals)), 1) if vals else None})
    return out


async def run(seconds: float, sessions: int, sample_every: float, warmup: float) -> dict:
    from benchmarks.bench_concurrency import parse_metrics, server_process
    from benchmarks.webrtc_client import connect
    from engines.manifest import DEFAULT_MODEL_DIR
    from export.avatar import ensure_default_avatar
    from realtime.progress import ProgressLine
    from realtime.sessions import union_box

    box = union_box(ensure_default_avatar(None, DEFAULT_MODEL_DIR).mouth_boxes)
    mic, _ = burst_signal(CYCLE_S)
    log_dir = Path(tempfile.mkdtemp(prefix="lipstream-soak-"))
    async with server_process("--max-sessions", str(max(8, sessions)), log_dir=log_dir) as server, \
            aiohttp.ClientSession() as http:
        proc = psutil.Process(server.pid)
        def call():  # noqa: ANN202
            return connect(server.base, http, mic=mic, mic_loop=True, mouth_box=box, video_stat=dark_share_y,
                           audio_stat=pcm_rms, luma=True)

        clients = [await call() for _ in range(sessions)]
        t_begin = time.monotonic()
        samples: list[dict] = []
        ended: list[dict] = []  # sessions the server ended during the run (each replaced by a new call)
        retired = []
        metrics0 = None
        progress = ProgressLine("soak", unit="s")
        while (now := time.monotonic()) - t_begin < seconds:
            per_session = await asyncio.gather(*(_session_sample(http, server.base, c.session_id) for c in clients))
            for i, c in enumerate(clients):
                if per_session[i] is None:  # ended (e.g. ICE consent expired on a starved machine): replace it
                    ended.append({"t": round(now - t_begin, 1), "session": c.session_id,
                                  "client_state": c.pc.connectionState})
                    await c.close()
                    if c not in retired:
                        retired.append(c)
                    try:
                        clients[i] = await call()
                    except Exception as exc:  # noqa: BLE001 - try again at the next sample
                        ended[-1]["replaced"] = f"failed: {exc.__class__.__name__}: {exc}"
            samples.append({"t": round(now - t_begin, 1), **_server_sample(proc), "load": os.getloadavg(),
                            "sessions": [x for x in per_session if x is not None]})
            if metrics0 is None and now - t_begin >= warmup:
                async with http.get(f"{server.base}/metrics") as r:
                    metrics0 = parse_metrics(await r.text())
            progress(int(now - t_begin), int(seconds))
            await asyncio.sleep(max(0.0, t_begin + len(samples) * sample_every - time.monotonic()))
        progress(int(seconds), int(seconds))
        async with http.get(f"{server.base}/metrics") as r:
            metrics1 = parse_metrics(await r.text())
        end = {"t": round(time.monotonic() - t_begin, 1), **_server_sample(proc), "load": os.getloadavg()}
        live = [c.pc.connectionState for c in clients]
        for c in clients:
            await c.close()
        log_text = server.log_path.read_text(errors="replace")
    result = _result(seconds, sessions, sample_every, warmup, samples, end, metrics0 or {}, metrics1,
                     retired + clients, t_begin, live, log_text[-4000:])
    result["sessions_ended"] = ended
    result["server_log_counts"] = {k: log_text.count(k) for k in (
        "Consent to send expired", "no audio from its microphone", "abandoned its worker thread", "Traceback")}
    result["engine_errors"] = {k: m1 - (metrics0 or {}).get(key, 0) for k, key, m1 in (
        (kind, f'lipstream_engine_errors_total{{kind="{kind}"}}', metrics1.get(f'lipstream_engine_errors_total{{kind="{kind}"}}', 0))
        for kind in ("raised", "hung"))}
    return result


def _result(seconds, sessions, sample_every, warmup, samples, end, m0, m1, clients, t_begin, live,  # noqa: ANN001, PLR0913
            log_tail) -> dict:  # noqa: ANN001
    start = next((s for s in samples if s["t"] >= warmup), samples[-1])
    skews = [_skew(c, t_begin) for c in clients]
    all_pairs = sorted(p for s in skews for p in s if p[0] >= warmup)
    loads = np.array([s["load"][0] for s in samples])
    sent = m1.get("lipstream_frames_sent_total", 0) - m0.get("lipstream_frames_sent_total", 0)
    repeated = m1.get("lipstream_frames_dropped_total", 0) - m0.get("lipstream_frames_dropped_total", 0)
    backlog = [(s["t"], np.median([x["backlog_ms"] for x in s["sessions"]]) / 1000) for s in samples]
    fps = []
    for c in clients[-sessions:]:  # the calls live at the end
        times = np.array([t for t, _ in c.video if t - t_begin >= warmup])
        fps.append((times.size - 1) / (times[-1] - times[0]) if times.size > 1 else 0.0)
    return {
        "benchmark": "soak", "machine": machine_info(),
        "settings": {"seconds": seconds, "sessions": sessions, "sample_every_s": sample_every, "warmup_s": warmup,
                     "bursts": f"{BURST_S} s of speech every {BURST_S + GAP_S:g} s, a {CYCLE_S:g} s cycle looped",
                     "server": "python -m benchmarks.serve (lipstream serve), its own process; clients: aiortc, "
                               "one process"},
        "load_average_1min": {"mean": round(float(loads.mean()), 2), "min": round(float(loads.min()), 2),
                              "max": round(float(loads.max()), 2)},
        "rss_mb": {"start": round(start["rss_mb"], 1), "end": round(end["rss_mb"], 1),
                   "max": round(max([end["rss_mb"]] + [s["rss_mb"] for s in samples]), 1),
                   "growth_mb": round(end["rss_mb"] - start["rss_mb"], 1),
                   "growth_pct": round(100 * (end["rss_mb"] / start["rss_mb"] - 1), 2)},
        "fds": {"start": start["fds"], "end": end["fds"], "max": max([end["fds"]] + [s["fds"] for s in samples])},
        "threads": {"start": start["threads"], "end": end["threads"],
                    "max": max([end["threads"]] + [s["threads"] for s in samples])},
        "av_skew": {**(summarize_ms([d for _, d in all_pairs]) if all_pairs else {}),
                    "drift_ms_per_min": _slope_per_min(all_pairs),
                    "per_session_drift_ms_per_min": [_slope_per_min([p for p in s if p[0] >= warmup]) for s in skews],
                    "windows": _windows(all_pairs, seconds)},
        "audio_backlog_ms": {"windows": _windows([b for b in backlog if b[0] >= warmup], seconds)},
        "received_fps": [round(f, 2) for f in fps],
        "frames_sent": sent, "frames_repeated": repeated,
        "repeated_pct": round(100 * repeated / sent, 3) if sent else None,
        "connected_at_end": live,
        "series": [{"t": s["t"], "rss_mb": round(s["rss_mb"], 1), "fds": s["fds"], "threads": s["threads"],
                    "load": round(s["load"][0], 2)} for s in samples],
        "skew_raw": [[round(t, 1), round(1000 * d, 1)] for t, d in all_pairs],
        "server_log_tail": log_tail[-1500:],
    }


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    t = [s["t"] / 60 for s in r["series"]]
    ax[0].plot(t, [s["rss_mb"] for s in r["series"]], color="tab:red")
    ax[0].set(title="server RSS", xlabel="min", ylabel="MiB")
    ax[1].plot(t, [s["fds"] for s in r["series"]], label="fds")
    ax[1].plot(t, [s["threads"] for s in r["series"]], label="threads")
    ax[1].plot(t, [s["load"] for s in r["series"]], label="load avg (1 min)")
    ax[1].set(title="server fds, threads; machine load", xlabel="min")
    ax[1].legend()
    if r["skew_raw"]:
        st, sd = zip(*r["skew_raw"])
        ax[2].plot([x / 60 for x in st], sd, ".", ms=2, alpha=0.4)
        ax[2].set_ylim(-200, 200)
    ax[2].set(title="A/V skew per burst (sound - lips)", xlabel="min", ylabel="ms")
    fig.suptitle(f"soak: {r['settings']['sessions']} sessions, {r['settings']['seconds']:.0f} s")
    save_figure(fig, path)


def print_table(r: dict) -> None:
    m, f, th, s = r["rss_mb"], r["fds"], r["threads"], r["av_skew"]
    print(f"\nserver RSS {m['start']:.0f} -> {m['end']:.0f} MiB ({m['growth_mb']:+.1f} MiB, {m['growth_pct']:+.2f} %), "
          f"max {m['max']:.0f}")
    print(f"file descriptors {f['start']} -> {f['end']} (max {f['max']}); threads {th['start']} -> {th['end']} "
          f"(max {th['max']})")
    if s.get("n"):
        drift = s["drift_ms_per_min"]
        print(f"A/V skew p50 {s['p50_ms']:+.1f} ms over {s['n']} bursts; drift "
              f"{'n/a' if drift is None else f'{drift:+.3f}'} ms/min; per window: "
              + ", ".join(f"{w['median_ms']}" for w in s["windows"]))
    print("audio backlog per window (ms): " + ", ".join(f"{w['median_ms']}" for w in r["audio_backlog_ms"]["windows"]))
    print(f"received fps {r['received_fps']}; repeated {r['frames_repeated']:.0f} of {r['frames_sent']:.0f} slots "
          f"({r['repeated_pct']} %); load average {r['load_average_1min']}; connected at the end: "
          f"{r['connected_at_end']}")
    if r.get("sessions_ended"):
        print(f"sessions the server ended (each replaced): {len(r['sessions_ended'])}; server log: "
              f"{r.get('server_log_counts')}; engine errors {r.get('engine_errors')}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=3600.0, help="how long (default: 3600)")
    p.add_argument("--sessions", type=int, default=4, help="live mic sessions (default: 4)")
    p.add_argument("--sample-every", type=float, default=10.0, help="seconds between samples (default: 10)")
    p.add_argument("--warmup", type=float, default=None,
                   help="seconds before the start figures are taken (default: 60, or a tenth of a short run)")
    p.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                   help="an environment variable for the server process (repeatable), for experiments: e.g. "
                        "LIPSTREAM_MEMDEBUG=/tmp/mem.jsonl (realtime/memdebug.py), MALLOC_ARENA_MAX=2")
    p.add_argument("--json", type=Path, default=RESULTS_DIR / "soak.json")
    p.add_argument("--plot", type=Path, default=None, help="PNG (default: next to --json)")
    args = p.parse_args(argv)
    if args.sessions < 1 or args.seconds <= 0:
        p.error("--sessions must be at least 1 and --seconds positive")
    warmup = args.warmup if args.warmup is not None else min(60.0, args.seconds / 10)
    server_env = dict(kv.split("=", 1) for kv in args.server_env if "=" in kv)
    if len(server_env) != len(args.server_env):
        p.error("--server-env takes NAME=VALUE")
    os.environ.update(server_env)  # the server process inherits this process's environment
    result = asyncio.run(run(args.seconds, args.sessions, min(args.sample_every, args.seconds / 4), warmup))
    result["settings"]["server_env"] = server_env
    publish(result, args.json, args.plot, print_table, plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
