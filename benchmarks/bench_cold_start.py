"""Time to first frame: a warm server, a never-loaded avatar, and the server's own start.

    python -m benchmarks.bench_cold_start [--repeats 5] [--json PATH]

Method.  The server runs as its own process (``python -m realtime.cli serve`` on a free 127.0.0.1
port) with a temporary ``--avatars-dir`` holding a copy of the prepared default avatar.  An aiortc
client in this process (``benchmarks.webrtc_client.connect``, no mic: a presenter session, so
nothing but the server's own pace decides when the first frame comes) measures, per session:

* offer -> answer: ``POST /offer`` sent -> its response received (aiohttp request trace);
* answer -> connected: the answer applied -> the client's ``connectionState`` is ``connected``
  (ICE and DTLS; the ICE part alone is recorded as ``answer_to_ice_ms``);
* connected -> first frame: -> the first video frame decoded by the client;
* and offer -> first frame, the sum.

Cases:

* **server start**: process start -> ``/healthz`` answers (imports, engine load, the default
  avatar loaded and uploaded, engine warm-up).  Measured ``--repeats`` times.
* **first session** after the server started (recorded once; it pays for aiortc's first codec
  and encoder set-up in the process).
* **warm**: a new session on the default avatar, which the server has loaded (``--repeats``).
* **fresh avatar**: a session on an avatar the server has never loaded: each repeat copies the
  default avatar's directory to a new name (its manifest renamed too, so the engine uploads new
  feature rows and a new renderer is built), so the offer pays for loading and registering it.
  Warm and fresh sessions alternate, so drifting load hits both alike.

Biases, stated.  The copies were just written, so their files are in the OS page cache: "fresh"
means new to the server, not cold from disk.  Sessions are closed (``DELETE``) before the next.
"connected -> first frame" includes waiting for the next 25 fps tick and the aiortc receiver
releasing a frame only when the next frame's first packet arrives (about one frame interval),
which a browser's receiver does not add.  Client and server share the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_concurrency import engine_info, parse_metrics, server_process
from benchmarks.machine import RESULTS_DIR, machine_info, publish, save_figure

__all__ = ["main", "run", "print_table", "plot", "time_session"]

PHASES = ("offer_to_answer_ms", "answer_to_connected_ms", "connected_to_first_frame_ms", "offer_to_first_frame_ms")
# summary names of the phases ("first_frame" = offer -> first frame, the headline)
SUMMARY_NAMES = {"offer_to_answer_ms": "offer_to_answer", "answer_to_connected_ms": "answer_to_connected",
                 "connected_to_first_frame_ms": "connected_to_first_frame", "offer_to_first_frame_ms": "first_frame"}


def _copy_avatar(src: Path, avatars_dir: Path, name: str) -> None:
    """A prepared avatar under a new name: the directory copied, the manifest's name changed."""
    dest = avatars_dir / name
    shutil.copytree(src, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["name"] = name
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


async def time_session(base: str, avatar: str | None = None, timeout_s: float = 30.0) -> dict:
    """One presenter session from offer to first decoded frame, split into phases (ms); then closed."""
    import aiohttp

    from benchmarks.webrtc_client import connect

    marks: dict[str, float] = {}

    async def on_request_end(_session, _ctx, params) -> None:  # noqa: ANN001
        if params.url.path == "/offer":
            marks["answer"] = time.monotonic()

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_request_end)
    async with aiohttp.ClientSession(trace_configs=[trace]) as http:
        t_offer = time.monotonic()
        client = await connect(base, http, avatar=avatar, keep_frames=False)
        t_applied = time.monotonic()
        pc = client.pc

        def on_state() -> None:
            if pc.connectionState == "connected":
                marks.setdefault("connected", time.monotonic())

        def on_ice() -> None:
            if pc.iceConnectionState in ("completed", "connected"):
                marks.setdefault("ice", time.monotonic())

        pc.on("connectionstatechange", on_state)
        pc.on("iceconnectionstatechange", on_ice)
        on_state()
        on_ice()
        try:
            deadline = time.monotonic() + timeout_s
            while not client.video:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no video frame within {timeout_s:.0f} s (state {pc.connectionState})")
                await asyncio.sleep(0.002)
            t_frame = client.video[0][0]
            async with http.delete(f"{base}/api/sessions/{client.session_id}") as r:
                await r.read()
        finally:
            await client.close()
    t_answer = marks.get("answer", t_applied)
    t_conn = marks.get("connected", t_frame)
    ms = 1000.0
    return {"avatar": avatar or "default", "offer_to_answer_ms": ms * (t_answer - t_offer),
            "answer_applied_ms": ms * (t_applied - t_answer),
            "answer_to_ice_ms": ms * (marks["ice"] - t_answer) if "ice" in marks else None,
            "answer_to_connected_ms": ms * (t_conn - t_answer),
            "connected_to_first_frame_ms": ms * (t_frame - t_conn),
            "offer_to_first_frame_ms": ms * (t_frame - t_offer)}


def _summary(samples: list[dict] | list[float]) -> dict:
    """ms samples -> {n, min_ms, p50_ms, max_ms, mean_ms}; per-session dicts -> that, per phase."""
    if samples and isinstance(samples[0], dict):
        return {SUMMARY_NAMES[k]: _summary([s[k] for s in samples]) for k in PHASES}
    a = np.asarray(samples, np.float64)
    return {"n": int(a.size), "min_ms": float(a.min()), "p50_ms": float(np.median(a)), "max_ms": float(a.max()),
            "mean_ms": float(a.mean())}


async def _run(repeats: int, engine: str, codec: str, progress: bool) -> dict:
    import aiohttp

    from export.avatar import ensure_default_avatar
    from realtime.progress import ProgressLine

    line = ProgressLine("cold start", unit="steps") if progress else None
    total, done = 3 * repeats, 0

    def step() -> None:
        nonlocal done
        done += 1
        if line:
            line(done, total)

    default = ensure_default_avatar()  # prepared once for this user if it never was
    startups: list[float] = []
    warm: list[dict] = []
    fresh: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="lipstream-cold-") as tmp:
        tmp = Path(tmp)
        avatars = tmp / "avatars"
        avatars.mkdir()
        shutil.copytree(default.path, avatars / "default")
        args = ("--avatars-dir", str(avatars), "--engine", engine, "--codec", codec)
        for _ in range(repeats - 1):  # server starts that only measure the start
            async with server_process(*args, log_dir=tmp) as server:
                startups.append(server.startup_s)
            step()
        async with server_process(*args, log_dir=tmp) as server:
            startups.append(server.startup_s)
            step()
            first = await time_session(server.base)
            for i in range(repeats):
                warm.append(await time_session(server.base))
                step()
                name = f"cold-{i}"
                _copy_avatar(avatars / "default", avatars, name)
                fresh.append(await time_session(server.base, avatar=name))
                step()
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{server.base}/metrics") as r:
                    eng, model = engine_info(parse_metrics(await r.text()))
    return {"startup_s": startups, "first": first, "warm": warm, "fresh": fresh, "engine": eng, "model": model}


def run(repeats: int = 5, *, engine: str = "auto", codec: str = "vp8", progress: bool = True) -> dict:
    """Measure server start, the first session, and ``repeats`` warm and fresh-avatar sessions."""
    t0 = time.monotonic()
    raw = asyncio.run(_run(repeats, engine, codec, progress))
    return {
        "benchmark": "cold_start", "machine": machine_info(), "engine": raw["engine"], "model": raw["model"],
        "codec": codec,
        "settings": {
            "repeats": repeats, "engine_arg": engine,
            "server": "python -m realtime.cli serve --host 127.0.0.1 --avatars-dir TMP (own process)",
            "client": "aiortc presenter session (no mic) in the benchmark process, 127.0.0.1, same machine",
            "fresh_avatar": "copy of the prepared default avatar under a new name per repeat (page-cache warm)",
            "order": "warm and fresh sessions alternate on one server; each session is closed before the next",
            "wall_s": time.monotonic() - t0,
        },
        "server_start": _summary([1000.0 * s for s in raw["startup_s"]]),
        "first_session": {SUMMARY_NAMES[k]: raw["first"][k] for k in PHASES},
        "warm": _summary(raw["warm"]),
        "fresh_avatar": _summary(raw["fresh"]),
        "raw": {"server_start_to_healthz_s": raw["startup_s"], "first_session": raw["first"],
                "warm": raw["warm"], "fresh_avatar": raw["fresh"]},
    }


def print_table(result: dict) -> None:
    """p50 (min-max) of each phase, ms, on stdout."""
    st = result["server_start"]
    print(f"\ncold start: engine {result['engine']}, model {result['model']}, {result['codec']}; ms, "
          f"p50 (min-max) over {result['settings']['repeats']}")
    print(f"server process start -> /healthz: {st['p50_ms']:.0f} ({st['min_ms']:.0f}-{st['max_ms']:.0f})")
    widths = (16, 18, 17, 17)
    head = f"{'case':<22} {'offer->answer':>16} {'answer->connected':>18} {'connected->frame':>17} {'offer->frame':>17}"
    print(head)
    print("-" * len(head))
    first = result["first_session"]
    names = [SUMMARY_NAMES[k] for k in PHASES]
    print(f"{'first after start':<22} " + " ".join(f"{first[k]:>{w}.0f}" for k, w in zip(names, widths)))
    for label, key in (("warm (default avatar)", "warm"), ("fresh avatar", "fresh_avatar")):
        row = result[key]
        cells = [f"{row[k]['p50_ms']:.0f} ({row[k]['min_ms']:.0f}-{row[k]['max_ms']:.0f})" for k in names]
        print(f"{label:<22} " + " ".join(f"{c:>{w}}" for c, w in zip(cells, widths)))


def plot(result: dict, path: Path) -> None:
    """Stacked phases (p50) of offer -> first frame, per case (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = [("first after start", {k: result["first_session"][k] for k in result["first_session"]}),
             ("warm", {k: v["p50_ms"] for k, v in result["warm"].items()}),
             ("fresh avatar", {k: v["p50_ms"] for k, v in result["fresh_avatar"].items()})]
    fig, ax = plt.subplots(figsize=(8, 3.2))
    for i, (label, ms) in enumerate(cases):
        left = 0.0
        for j, k in enumerate(("offer_to_answer", "answer_to_connected", "connected_to_first_frame")):
            ax.barh(i, ms[k], left=left, color=f"C{j}", label=k.replace("_", " ") if i == 0 else None)
            left += ms[k]
        ax.text(left + 2, i, f"{ms['first_frame']:.0f} ms", va="center", fontsize=9)
    ax.set_yticks(range(len(cases)), [c[0] for c in cases])
    ax.invert_yaxis()
    ax.set_xlabel("POST /offer -> first decoded frame, ms (p50)")
    st = result["server_start"]
    ax.set_title(f"lipstream cold start ({result['engine']}); server start -> /healthz p50 {st['p50_ms']:.0f} ms",
                 fontsize=10)
    ax.set_xlim(0, 1.15 * max(ms["first_frame"] for _, ms in cases))
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=3, frameon=False)
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_cold_start",
        description="Offer -> first decoded frame for a warm server and for a never-loaded avatar, split into "
                    "offer->answer, answer->connected and connected->first frame; and server start -> /healthz.")
    p.add_argument("--repeats", type=int, default=5, help="server starts, warm and fresh sessions each (default: 5)")
    p.add_argument("--engine", default="auto", help="server --engine (default: auto)")
    p.add_argument("--codec", default="vp8", choices=("vp8", "h264"), help="server video codec (default: vp8)")
    p.add_argument("--json", type=Path, default=RESULTS_DIR / "cold_start.json",
                   help="result file (default: benchmarks/results/cold_start.json)")
    p.add_argument("--plot", type=Path, default=RESULTS_DIR / "cold_start.png",
                   help="plot file (default: benchmarks/results/cold_start.png)")
    p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    result = run(args.repeats, engine=args.engine, codec=args.codec, progress=not args.no_progress)
    publish(result, args.json, args.plot, print_table, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
