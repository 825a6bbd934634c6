"""Engine throughput and call latency per backend, precision and batch size, with output parity.

    python -m benchmarks.bench_engine [--backends onnxruntime,torch] [--batches 1,2,4,...,64]
                                      [--seconds 1.0] [--json PATH]

For every backend/precision this machine can run (ONNX Runtime FP32/FP16 on CPU; torch FP32 on
CPU; torch FP16/FP32 with CUDA graphs on a GPU; TensorRT where a plan was built), and every batch
size: calls of that many mel windows spread over the default avatar's rows, timed for
``--seconds`` after a warm-up.  Reported: frames/s (batch / mean call time), p50/p99 per call,
and the speed-up of one batched call over one call per frame ("batched vs unbatched": frames/s at
batch B over frames/s at batch 1).  Parity: crops against ONNX Runtime FP32 on the same 16 windows
(max and mean absolute difference, pixel values in [0, 1]).  CPU ms per call (process time over
the timed loop) shows thread pools that busy-wait; ``--gap-ms 35`` paces calls like the server's
25 fps tick, which is where a backend's wake-up cost and spinning show.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import RESULTS_DIR, machine_info, publish, save_figure, summarize_ms

BATCHES = (1, 2, 4, 8, 16, 32, 64)


def candidates(wanted: list[str] | None) -> list[tuple[str, dict]]:
    """(backend, kwargs) pairs to try: everything this machine might run, or those asked for."""
    from engines.torch_engine import torch_cuda_available

    out: list[tuple[str, dict]] = [("onnxruntime", {"precision": "fp32"}), ("onnxruntime", {"precision": "fp16"})]
    try:
        import torch  # noqa: F401
        out.append(("torch", {"device": "cpu", "precision": "fp32"}))
        if torch_cuda_available():
            out += [("torch", {"device": "cuda", "precision": p}) for p in ("fp16", "fp32")]
    except ImportError:
        pass
    out += [("tensorrt", {"precision": p}) for p in ("fp16", "fp32")]
    return [c for c in out if not wanted or c[0] in wanted]


def _inputs(batch: int, n_rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mel = rng.uniform(-4, 2, (batch, 1, 80, 16)).astype(np.float32)
    return mel, rng.integers(0, n_rows, batch).astype(np.int64), np.ones(batch, np.float32)


def bench(backends: list[str] | None, batches: tuple[int, ...], seconds: float, gap_ms: float = 0.0) -> dict:
    from engines.factory import create_engine
    from engines.manifest import ModelArtifactError
    from export.avatar import ensure_default_avatar
    from realtime.progress import ProgressLine

    avatar = ensure_default_avatar()
    ref_engine = create_engine("onnxruntime")
    ref_engine.add_avatar(avatar.name, avatar.features)
    probe = _inputs(16, avatar.n_frames, seed=1)
    reference = ref_engine.run(*probe).crops
    del ref_engine

    runs, skipped = [], {}
    todo = candidates(backends)
    progress = ProgressLine("engine benchmark", unit="points")
    total, done = len(todo) * len(batches), 0
    for backend, kwargs in todo:
        label = f"{backend}-{kwargs.get('device', 'cpu' if backend == 'onnxruntime' else 'cuda')}-{kwargs['precision']}"
        try:
            engine = create_engine(backend, **kwargs)
        except (ModelArtifactError, ImportError, RuntimeError) as exc:
            skipped[label] = str(exc).split(";")[0]
            done += len(batches)
            continue
        engine.add_avatar(avatar.name, avatar.features)
        crops = engine.run(*probe).crops
        diff = np.abs(crops - reference)
        points = []
        for b in batches:
            mel, rows, gate = _inputs(b, avatar.n_frames)
            for _ in range(3):
                engine.run(mel, rows, gate)
            calls: list[float] = []
            t_end = time.perf_counter() + seconds
            cpu0 = time.process_time()
            while time.perf_counter() < t_end or len(calls) < 5:
                t0 = time.perf_counter()
                engine.run(mel, rows, gate)
                calls.append(time.perf_counter() - t0)
                if gap_ms:
                    time.sleep(gap_ms / 1000)
            cpu_ms = 1000 * (time.process_time() - cpu0) / len(calls)  # includes any busy-waiting in the gaps
            s = summarize_ms(calls)
            points.append({"batch": b, "calls": len(calls), "frames_per_s": b / float(np.mean(calls)),
                           "call_ms": s, "per_frame_p50_ms": s["p50_ms"] / b, "cpu_ms_per_call": cpu_ms})
            done += 1
            progress(done, total)
        base = points[0]["frames_per_s"] if points and points[0]["batch"] == 1 else None
        for p in points:
            p["speedup_vs_batch1"] = p["frames_per_s"] / base if base else None
        runs.append({"label": label, "engine": engine.name, "backend": backend,
                     "precision": kwargs["precision"], "device": kwargs.get("device"),
                     "parity_vs_onnxruntime_fp32": {"max_abs": float(diff.max()), "mean_abs": float(diff.mean())},
                     "points": points})
        del engine
    progress(total, total)
    info = machine_info()
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["cuda"] = torch.version.cuda
    except ImportError:
        pass
    return {"benchmark": "engine", "machine": info, "settings": {"batches": list(batches), "seconds_per_point": seconds,
            "gap_ms": gap_ms,
            "avatar": avatar.name, "parity_windows": 16}, "runs": runs, "skipped": skipped}


def print_table(r: dict) -> None:
    print(f"\n{'engine':<24}{'batch':>6}{'frames/s':>11}{'call p50 ms':>13}{'call p99 ms':>13}{'CPU ms':>8}"
          f"{'vs b=1':>8}")
    for run in r["runs"]:
        for p in run["points"]:
            sp = f"{p['speedup_vs_batch1']:.2f}x" if p["speedup_vs_batch1"] else "-"
            print(f"{run['label']:<24}{p['batch']:>6}{p['frames_per_s']:>11.0f}{p['call_ms']['p50_ms']:>13.2f}"
                  f"{p['call_ms']['p99_ms']:>13.2f}{p['cpu_ms_per_call']:>8.1f}{sp:>8}")
        par = run["parity_vs_onnxruntime_fp32"]
        print(f"{'':<24}parity vs onnxruntime fp32: max {par['max_abs']:.2e}, mean {par['mean_abs']:.2e}")
    for label, why in r["skipped"].items():
        print(f"skipped {label}: {why}")


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for run in r["runs"]:
        b = [p["batch"] for p in run["points"]]
        ax[0].plot(b, [p["frames_per_s"] for p in run["points"]], "o-", label=run["label"])
        ax[1].plot(b, [p["call_ms"]["p99_ms"] for p in run["points"]], "o-", label=run["label"])
    for a, title, ylab in ((ax[0], "throughput", "frames/s"), (ax[1], "call latency p99", "ms")):
        a.set(xscale="log", yscale="log", xlabel="batch", ylabel=ylab, title=title)
        a.set_xticks(r["settings"]["batches"], [str(x) for x in r["settings"]["batches"]])
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    m = r["machine"]
    fig.suptitle(m.get("gpu") or f"{m['cpu']} ({m['cores']} cores)")
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_engine", description=__doc__.split("\n\n")[0])
    p.add_argument("--backends", default="", help="comma list of onnxruntime,torch,tensorrt (default: all available)")
    p.add_argument("--batches", default=",".join(map(str, BATCHES)), help="batch sizes (default: 1..64 in powers of 2)")
    p.add_argument("--seconds", type=float, default=1.0, help="timed seconds per batch size (default: 1)")
    p.add_argument("--gap-ms", type=float, default=0.0,
                   help="sleep between calls, as a server does between ticks (e.g. 35): shows wake-up cost and "
                        "busy-waiting in CPU ms/call (default: 0, back to back)")
    p.add_argument("--json", type=Path, default=RESULTS_DIR / "engine.json")
    p.add_argument("--plot", type=Path, default=None, help="PNG (default: next to --json)")
    args = p.parse_args(argv)
    wanted = [b for b in args.backends.split(",") if b] or None
    result = bench(wanted, tuple(int(b) for b in args.batches.split(",")), args.seconds, args.gap_ms)
    publish(result, args.json, args.plot, print_table, plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
