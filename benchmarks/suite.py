"""``lipstream bench``: every benchmark in one command, one JSON + PNG each, and a summary.

    lipstream bench --quick            # stages, engine, server latency, glass-to-glass,
                                       # concurrency (batched vs naive), cold start: < 10 min on 2 cores
    lipstream bench                    # the same, longer runs and N up to 16
    lipstream bench --long             # + the soak: one hour, four sessions (RSS, fds, threads, A/V skew drift)
    lipstream bench --long --only soak --soak-seconds 300   # a shorter soak to try it
    lipstream bench --only glass,cold  # a subset

Each part is its own script in ``benchmarks/`` (run it alone for its options) and writes
``<part>.json`` and ``<part>.png`` into ``--out``; the suite adds ``summary.json`` and
``summary.md`` (the headline figures against the project's targets, with the machine and the
command), which is what ``docs/benchmarks.md`` quotes.  A part that cannot run here (no Chromium,
say) is reported as skipped with the reason, and the others still run.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from benchmarks.machine import RESULTS_DIR, machine_info

TARGETS = {"glass_p50_ms": 200.0, "av_skew_abs_ms": 40.0, "sessions_at_25fps": 8}


@dataclass(frozen=True)
class Part:
    name: str
    module: str
    quick: list[str]
    full: list[str]
    about: str


def _secs(x: float) -> str:
    return f"{x:g}"


def parts(scale: float) -> list[Part]:
    """The suite's parts and their arguments; ``scale`` shrinks every duration (smoke tests)."""
    s = lambda x: _secs(max(x * scale, 1.0))  # noqa: E731
    frames = str(max(int(500 * scale), 50))
    return [
        Part("stages", "benchmarks.bench_render", ["--frames", frames, "--seconds", s(10)],
             ["--frames", "1000", "--seconds", "30"], "per-frame cost of every stage, render speed"),
        Part("engine", "benchmarks.bench_engine", ["--seconds", _secs(max(0.3 * scale, 0.05))],
             ["--seconds", "2"], "frames/s and call latency per backend, precision and batch size"),
        Part("server_latency", "benchmarks.bench_server_latency", ["--seconds", s(12)], ["--seconds", "30"],
             "server audio-in -> frame-out by stage, A/V skew at an aiortc client"),
        # Chromium's A/V sync ramps the video delay up over a call's first ~20 s: measure after it
        Part("glass", "benchmarks.bench_glass", ["--seconds", _secs(max(16 * scale, 6.0)), "--warmup", s(20)],
             ["--seconds", "40", "--warmup", "20"],
             "glass-to-glass in headless Chromium: mic onset -> lips moving on screen"),
        Part("concurrency", "benchmarks.bench_concurrency",
             ["--sessions", "1,2,4,8" if scale >= 0.5 else "1,2", "--seconds", s(6)],
             ["--sessions", "1,2,4,8,16", "--seconds", "15"],
             "N sessions from separate client processes, batched vs naive scheduler"),
        Part("cold_start", "benchmarks.bench_cold_start", ["--repeats", "3" if scale >= 0.5 else "1"],
             ["--repeats", "5"], "POST /offer -> first decoded frame, warm server and a fresh avatar"),
    ]


def soak_part(seconds: float = 3600.0, sessions: int = 4) -> Part:
    args = ["--seconds", _secs(seconds), "--sessions", str(sessions)]
    return Part("soak", "benchmarks.bench_soak", args, args,
                f"{sessions} sessions for {seconds / 60:g} min against a server process: RSS, fds, threads, "
                "A/V skew drift, repeated frames")


def run_part(part: Part, args: list[str], out: Path) -> dict[str, Any]:
    """Run one part's ``main`` in this process; returns its status (its figures are in its JSON)."""
    import importlib

    json_path = out / f"{part.name}.json"
    argv = [*args, "--json", str(json_path), "--plot", str(out / f"{part.name}.png")]
    t0 = time.perf_counter()
    print(f"\n=== {part.name}: {part.about}\n    python -m {part.module} {' '.join(argv)}", flush=True)
    try:
        main: Callable[[list[str]], int] = importlib.import_module(part.module).main
        rc = main(argv)
    except SystemExit as exc:  # argparse or a part's own exit
        rc = exc.code if isinstance(exc.code, int) else 1
    except Exception as exc:  # noqa: BLE001 - one part failing must not lose the others' figures
        traceback.print_exc()
        rc, why = 1, f"{exc.__class__.__name__}: {exc}"
    else:
        why = ""
    status = {"part": part.name, "command": f"python -m {part.module} {' '.join(argv)}",
              "seconds": round(time.perf_counter() - t0, 1), "rc": rc}
    if rc == 0 and json_path.is_file():
        status["json"] = str(json_path)
    else:
        status["skipped"] = why or f"exit code {rc} (see its output above)"
    return status


def headline(out: Path) -> dict[str, Any]:
    """The figures the project reports, read back from each part's JSON (None where absent)."""
    def load(name: str) -> dict:
        p = out / f"{name}.json"
        return json.loads(p.read_text()) if p.is_file() else {}

    def get(d: Any, *keys: str) -> Any:
        for k in keys:
            if not isinstance(d, dict) or k not in d:
                return None
            d = d[k]
        return d

    st, sl, gl, cc, cs, sk = (load(n) for n in ("stages", "server_latency", "glass", "concurrency", "cold_start",
                                                 "soak"))
    rss = get(sk, "rss_mb")
    fds, threads = get(sk, "fds"), get(sk, "threads")
    return {
        "render_speed_x": get(st, "render", "speed_x_realtime"),
        "engine_batch1_p50_ms": get(st, "stages", "engine_batch1", "p50_ms"),
        "server_latency_p50_ms": get(sl, "audio_to_frame", "p50_ms"),
        "server_latency_p99_ms": get(sl, "audio_to_frame", "p99_ms"),
        "server_stages_p50_ms": {k: v["p50_ms"] for k, v in (get(sl, "stages") or {}).items()},
        "glass_p50_ms": get(gl, "glass_to_glass", "p50_ms"),
        "glass_p95_ms": get(gl, "glass_to_glass", "p95_ms"),
        # at the speaker: what a viewer hears against what they see (Chromium's playout delay added)
        "glass_av_skew_p50_ms": get(gl, "av_skew_at_speaker", "p50_ms") or get(gl, "av_skew", "p50_ms"),
        "glass_fps": get(gl, "fps", "presented"),
        "sessions_at_25fps": get(cc, "max_sessions"),
        "cold_start_warm_p50_ms": get(cs, "warm", "first_frame", "p50_ms"),
        "cold_start_fresh_avatar_p50_ms": get(cs, "fresh_avatar", "first_frame", "p50_ms"),
        "soak_seconds": get(sk, "settings", "seconds"),
        "soak_av_skew_drift_ms_per_min": get(sk, "av_skew", "drift_ms_per_min"),
        "soak_sessions": get(sk, "settings", "sessions"),
        "soak_rss_growth_mb": (rss["end"] - rss["start"]) if rss else None,
        "soak_rss_growth_pct": get(sk, "rss_mb", "growth_pct"),
        "soak_fds_start_end": [fds["start"], fds["end"]] if fds else None,
        "soak_threads_start_end": [threads["start"], threads["end"]] if threads else None,
        "soak_load_average": get(sk, "load_average_1min", "mean"),
    }


def summary_markdown(summary: dict[str, Any]) -> str:
    h, m = summary["headline"], summary["machine"]

    def fmt(v: Any, unit: str = " ms") -> str:
        return "—" if v is None else (f"{v:.1f}{unit}" if isinstance(v, float) else f"{v}{unit}")

    sessions = h["sessions_at_25fps"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, {m['date']}.  ",
        f"Command: `{summary['command']}` ({summary['seconds']:.0f} s).",
        "",
        "| figure | measured | target |",
        "|---|---:|---:|",
        f"| glass-to-glass in Chromium, p50 / p95 | {fmt(h['glass_p50_ms'])} / {fmt(h['glass_p95_ms'])} "
        f"| p50 ≤ {TARGETS['glass_p50_ms']:.0f} ms |",
        f"| A/V skew in Chromium at the speaker (sound − lips), p50 | {fmt(h['glass_av_skew_p50_ms'])} "
        f"| ≤ {TARGETS['av_skew_abs_ms']:.0f} ms |",
        f"| server audio-in → frame-out, p50 / p99 | {fmt(h['server_latency_p50_ms'])} / "
        f"{fmt(h['server_latency_p99_ms'])} | |",
        f"| sessions held at ≥ 24.5 fps, p99 interval ≤ 60 ms (batched / naive) | "
        f"{_sessions(sessions)} | ≥ {TARGETS['sessions_at_25fps']} |",
        f"| cold start, POST /offer → first frame (warm / fresh avatar), p50 | "
        f"{fmt(h['cold_start_warm_p50_ms'])} / {fmt(h['cold_start_fresh_avatar_p50_ms'])} | |",
        f"| offline render speed | {fmt(h['render_speed_x'], 'x')} real time | |",
    ]
    if h["soak_seconds"]:
        lines.append(f"| soak, {h['soak_seconds']:.0f} s, {h.get('soak_sessions') or 1} session(s): A/V skew drift, "
                     f"RSS growth, fds / threads start → end | "
                     f"{fmt(h['soak_av_skew_drift_ms_per_min'], ' ms/min')}, {fmt(h['soak_rss_growth_mb'], ' MiB')} "
                     f"({fmt(h.get('soak_rss_growth_pct'), ' %')}), {h.get('soak_fds_start_end')} / "
                     f"{h.get('soak_threads_start_end')} | RSS < 5 % |")
    if h["server_stages_p50_ms"]:
        lines += ["", "Server latency by stage, p50 ms: " + ", ".join(
            f"{k} {v:.1f}" for k, v in h["server_stages_p50_ms"].items())]
    skipped = [p for p in summary["parts"] if "skipped" in p]
    if skipped:
        lines += [""] + [f"- skipped {p['part']}: {p['skipped']}" for p in skipped]
    return "\n".join(lines) + "\n"


def _sessions(v: Any) -> str:
    if isinstance(v, dict):
        return " / ".join(str(v.get(k, "—")) for k in ("batched", "naive"))
    return "—" if v is None else str(v)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="lipstream bench", description="Run the benchmark suite: each part prints a table and writes "
        "JSON + PNG; a summary compares the headline figures with the targets.",
        epilog="Parts: stages, engine, server_latency, glass, concurrency, cold_start (and soak with --long). "
               "Run a part alone with `python -m benchmarks.bench_<part> --help` for its options.")
    p.add_argument("--quick", action="store_true", help="short runs, N up to 8 (under 10 minutes on 2 cores)")
    p.add_argument("--long", action="store_true",
                   help="also the soak: four sessions for an hour against a server process (RSS growth, file "
                        "descriptors, threads, A/V skew drift, repeated frames)")
    p.add_argument("--soak-seconds", type=float, default=3600.0, help="the soak's length (default: 3600)")
    p.add_argument("--soak-sessions", type=int, default=4, help="the soak's sessions (default: 4)")
    p.add_argument("--only", default="", help="comma list of parts to run (default: all)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help=f"where results go (default: {RESULTS_DIR})")
    p.add_argument("--duration-scale", type=float, default=1.0,
                   help="multiply --quick durations (e.g. 0.25 for a smoke test; figures then mean little)")
    args = p.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    if args.soak_seconds <= 0 or args.soak_sessions < 1:
        p.error("--soak-seconds must be positive and --soak-sessions at least 1")
    soak = soak_part(args.soak_seconds, args.soak_sessions)
    chosen = parts(args.duration_scale) + ([soak] if args.long or "soak" in names else [])
    unknown = set(names) - {pt.name for pt in chosen}
    if unknown:
        p.error(f"unknown part(s) {', '.join(sorted(unknown))}; parts: {', '.join(pt.name for pt in chosen)}, soak")
    if names:
        chosen = [pt for pt in chosen if pt.name in names]
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    statuses = [run_part(pt, pt.quick if args.quick else pt.full, args.out) for pt in chosen]
    summary = {"benchmark": "suite", "machine": machine_info(), "python": platform.python_version(),
               "command": "lipstream bench " + " ".join(argv if argv is not None else sys.argv[1:]),
               "mode": "quick" if args.quick else "full", "seconds": time.perf_counter() - t0,
               "parts": statuses, "headline": headline(args.out), "targets": TARGETS}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    md = summary_markdown(summary)
    (args.out / "summary.md").write_text(md)
    print("\n" + md)
    print(f"wrote {args.out / 'summary.json'} and summary.md", file=sys.stderr)
    return 0 if all("json" in s for s in statuses) else 1


if __name__ == "__main__":  # `lipstream bench` runs this module as its own process
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    raise SystemExit(main())
