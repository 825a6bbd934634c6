"""Streamed speech latency on loopback: first audio in -> first moving frame, clear -> mouth closed.

    python -m benchmarks.bench_stream_api [--trials 10] [--rate 16000] [--chunk-ms 40] [--json PATH]

An in-process server (the real app, engine and frame loop), a presenter aiortc client decoding
the video on 127.0.0.1, and an aiohttp WebSocket client on ``/api/sessions/{id}/stream``.  Each
trial waits for the mouth to rest, streams speech (the bundled sample, cut to start at its onset)
in ``--chunk-ms`` chunks at real time, and after ``--speak-s`` sends ``{"type": "clear"}``.

Measured per trial, from the moment the first audio chunk / the clear was sent:

* **first moving frame**, server side: the first frame handed to the tracks whose mouth opening
  (the rendered mouth parameter) is above ``OPEN`` — what the sender's audio produced, before
  encode and network; client side: the first *decoded* frame whose dark mouth-pixel share rises
  above its rest level (adds VP8 encode, RTP on loopback and aiortc's receiver, which releases a
  frame only when the next one starts arriving: about one frame interval; ``--release-on-marker``
  gives the client ``realtime/video_receiver.py``'s buffer, which releases it at its last packet,
  as browsers and lipstream's own remote agent backend do);
* ``speech_started``: the event's own latency (first sample in -> its frame handed to the tracks);
* **interrupt -> mouth closed**, server side: the first frame handed to the tracks after the clear
  from which the opening stays below ``CLOSED`` (for the 0.8 s watched); client side: the decoded
  mouth back at rest for good; and the ``interrupted`` event's arrival.

Targets: first moving frame <= 120 ms, interrupt -> mouth closed <= 100 ms (server side: the
frames the server sends; the client side figures are printed beside them).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import aiohttp
import numpy as np

from benchmarks.latency_trials import (
    first_after,
    load_average,
    pixel_trial,
    raw_ms,
    send_paced,
    settled_after,
    speech_from_onset,
    summarize_rows,
)
from benchmarks.machine import RESULTS_DIR, machine_info, publish, save_figure

OPEN, CLOSED = 0.15, 0.05  # rendered mouth opening: "moving" above, "closed" below
TARGET_FIRST_MS, TARGET_CLEAR_MS = 120.0, 100.0


async def run(trials: int, rate: int, chunk_ms: float, speak_s: float, engine_name: str,
              release_on_marker: bool = False) -> dict:
    from benchmarks.bench_server_latency import dark_share
    from benchmarks.webrtc_client import connect, serving
    from engines.factory import create_engine
    from export.avatar import ensure_default_avatar
    from realtime.server import K_STATE

    load_before = load_average()
    engine = create_engine(engine_name)
    avatar = ensure_default_avatar()
    box = tuple(int(v) for v in avatar.mouth_boxes[0])
    speech = speech_from_onset(rate)
    chunk = int(rate * chunk_ms / 1000)
    n_speak = int(speak_s * rate)
    pcm = (np.clip(speech, -1, 1) * 32767).astype("<i2")
    frames: list[tuple[float, float]] = []  # server: (time handed to the tracks, mouth opening)
    marks: list[dict] = []
    async with serving(engine) as (base, app), aiohttp.ClientSession() as http:
        client = await connect(base, http, mouth_box=box, video_stat=dark_share)
        if release_on_marker:  # before the first RTP packet: connect() returns with the answer set
            from realtime.video_receiver import release_frames_on_marker

            release_frames_on_marker(client.pc)
        session = app[K_STATE].sessions[client.session_id]
        on_frame = session.on_frame

        def record(frame, planes, params, timing=None):  # noqa: ANN001, ANN202
            on_frame(frame, planes, params, timing)
            p = np.asarray(params)
            frames.append((time.monotonic(), float(p[0]) * (1.0 - float(p[2])) if p.size >= 3 else float(p[0])))

        session.on_frame = record  # the benchmark's own tap on the frames the server hands out
        events: list[tuple[float, dict]] = []
        ws = await http.ws_connect(f"{base}/api/sessions/{client.session_id}/stream?rate={rate}")

        async def read() -> None:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    events.append((time.monotonic(), msg.json()))

        reader = asyncio.ensure_future(read())
        await asyncio.sleep(2.0)  # connected, first frames out, the mouth at rest
        for i in range(trials):
            await asyncio.sleep(1.2)
            t_send = await send_paced(lambda part: ws.send_bytes(part.tobytes()), pcm[:n_speak], rate, chunk)
            t_clear = time.monotonic()
            await ws.send_str('{"type": "clear"}')
            await asyncio.sleep(0.8)
            marks.append({"t_send": t_send, "t_clear": t_clear})
            print(f"\rtrial {i + 1}/{trials}", end="", flush=True)
        print()
        await ws.close()
        await reader
        await client.close()

    ft = np.array([t for t, _ in frames])
    fo = np.array([o for _, o in frames])
    vt = np.array([t for t, _ in client.video])
    vd = np.array([v for _, v in client.video])
    rows = []
    for m in marks:
        t_send, t_clear = m["t_send"], m["t_clear"]
        moving_client, closed_client = pixel_trial(vt, vd, t_send, t_clear)
        started = [e for t, e in events if e["type"] == "speech_started" and t_send <= t < t_clear + 0.5]
        interrupted = [t for t, e in events if e["type"] == "interrupted" and t >= t_clear]
        rows.append({
            "first_moving_server_s": first_after(ft, fo > OPEN, t_send, t_clear),
            "first_moving_client_s": moving_client,
            "speech_started_s": started[0]["latency_s"] if started else None,
            "closed_server_s": settled_after(ft, fo < CLOSED, t_clear, t_clear + 0.8),
            "closed_client_s": closed_client,
            "interrupted_event_s": interrupted[0] - t_clear if interrupted else None,
        })

    result = {
        "benchmark": "stream_api", "machine": machine_info(), "engine": engine.name,
        "load_average": {"before": load_before, "after": load_average()},
        "model": {"name": engine.manifest.name, "lookahead_s": engine.manifest.lookahead_s},
        "settings": {"trials": trials, "rate": rate, "chunk_ms": chunk_ms, "speak_s": speak_s,
                     "open_threshold": OPEN, "closed_threshold": CLOSED,
                     "transport": "aiohttp WebSocket + aiortc client on 127.0.0.1, same process",
                     "client_jitter_buffer": "MarkerJitterBuffer" if release_on_marker else "aiortc's"},
        "targets_ms": {"first_moving_frame": TARGET_FIRST_MS, "interrupt_to_closed": TARGET_CLEAR_MS},
        **summarize_rows(rows),
        "trials_raw": raw_ms(rows),
    }
    fm, cl = result["first_moving_server_s"], result["closed_server_s"]
    result["meets_targets"] = {
        "first_moving_frame": bool(fm and fm["p50_ms"] <= TARGET_FIRST_MS),
        "interrupt_to_closed": bool(cl and cl["p50_ms"] <= TARGET_CLEAR_MS),
    }
    return result


LABELS = {
    "first_moving_server_s": "first audio in -> first moving frame handed to the tracks (server)",
    "first_moving_client_s": "first audio in -> first moving frame decoded (aiortc client)",
    "speech_started_s": "first sample in -> its frame handed to the tracks (speech_started)",
    "closed_server_s": "clear sent -> first closed-mouth frame handed to the tracks (server)",
    "closed_client_s": "clear sent -> decoded mouth at rest (aiortc client)",
    "interrupted_event_s": "clear sent -> 'interrupted' event received",
}


def print_table(r: dict) -> None:
    print(f"\n{'measure':<72}{'p50 ms':>8}{'p95 ms':>8}{'min':>7}{'n':>4}")
    for key, label in LABELS.items():
        s = r.get(key)
        if s:
            print(f"{label:<72}{s['p50_ms']:>8.1f}{s['p95_ms']:>8.1f}{s['min_ms']:>7.1f}{s['n']:>4}")
        else:
            print(f"{label:<72}{'-':>8}")
    load = r.get("load_average") or {}
    if load:
        print(f"load average (1 min) before/after: {load['before']['1min']} / {load['after']['1min']} "
              f"on {load['before']['cores']} cores (other jobs share them)")
    t = r["targets_ms"]
    print(f"targets (server side, p50): first moving frame <= {t['first_moving_frame']:.0f} ms: "
          f"{'met' if r['meets_targets']['first_moving_frame'] else 'NOT met'}; interrupt -> closed <= "
          f"{t['interrupt_to_closed']:.0f} ms: {'met' if r['meets_targets']['interrupt_to_closed'] else 'NOT met'}")


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    keys = [k for k in LABELS if r.get(k)]
    for i, k in enumerate(keys):
        vals = [t[k] for t in r["trials_raw"] if t[k] is not None]
        ax.scatter(vals, [i] * len(vals), alpha=0.6)
    ax.set_yticks(range(len(keys)), [k.removesuffix("_s") for k in keys])
    ax.axvline(r["targets_ms"]["first_moving_frame"], color="tab:red", ls="--", lw=1)
    ax.axvline(r["targets_ms"]["interrupt_to_closed"], color="tab:orange", ls=":", lw=1)
    ax.set(xlabel="ms", title=f"streamed speech latency ({r['engine']}, {r['settings']['trials']} trials)")
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_stream_api", description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--rate", type=int, default=16000, choices=(16000, 24000, 48000))
    p.add_argument("--chunk-ms", type=float, default=40.0, help="audio per WebSocket message (default: 40)")
    p.add_argument("--speak-s", type=float, default=1.5, help="speech streamed before the clear (default: 1.5)")
    p.add_argument("--engine", default="auto")
    p.add_argument("--release-on-marker", action="store_true",
                   help="the client releases each video frame at its marker packet (realtime/video_receiver.py), "
                        "not when the next frame starts arriving (aiortc's default: +1 frame)")
    p.add_argument("--json", type=Path, default=RESULTS_DIR / "stream_api.json")
    p.add_argument("--plot", type=Path, default=None, help="PNG (default: next to --json)")
    args = p.parse_args(argv)
    result = asyncio.run(run(args.trials, args.rate, args.chunk_ms, args.speak_s, args.engine,
                             args.release_on_marker))
    publish(result, args.json, args.plot, print_table, plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
