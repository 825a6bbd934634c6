"""Measure a G4G preset's per-frame CPU step time and its cached avatar memory.

    python -m export.g4g.bench [--presets tiny base] [--batches 1 8] [--repeats 20] [--threads 2]

Random weights (time and memory do not depend on the values).  Per preset it exports the model
exactly as ``lipstream export --from g4g`` does (into a temporary directory, without the parity
check), then times per frame, after warm-up calls, the median of ``repeats`` calls of

* ``onnxruntime``: the serving graph through ``OnnxRuntimeEngine`` (what ``serve --model`` runs),
* ``torch``: ``G4G.step`` in eager PyTorch with ``torch.set_num_threads(threads)``,

at each batch size, and reports the avatar features' bytes per frame (fp32) and the parameter
counts.  Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def _median_ms(fn, repeats: int, per: int) -> dict[str, float]:  # noqa: ANN001
    """Median wall and process-CPU milliseconds per frame (CPU time is what other load on a shared
    machine inflates least: it counts only this process's cycles, on every thread)."""
    for _ in range(3):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"wall": round(statistics.median(wall) / per * 1e3, 3), "cpu": round(statistics.median(cpu) / per * 1e3, 3)}


def bench_preset(name: str, batches: list[int], repeats: int, threads: int) -> dict:
    """Time one preset: ONNX Runtime serving graph and eager torch step, per frame."""
    import torch

    from engines.onnxruntime_engine import OnnxRuntimeEngine
    from export.g4g import G4G, PRESETS
    from export.g4g.serving import export_g4g

    torch.set_num_threads(threads)
    gen = G4G(PRESETS[name]).eval()
    shapes = gen.feature_shapes()
    rng = np.random.default_rng(0)
    feats = {k: rng.random((4, *s), dtype=np.float32) for k, s in shapes.items()}
    out: dict = {"config": gen.cfg.to_dict(), "params": {part: sum(p.numel() for p in getattr(gen, part).parameters())
                                                         for part in ("es", "er", "ea", "intra", "inter", "deform",
                                                                      "decoder", "blend")},
                 "feature_bytes_per_frame_fp32": {k: int(np.prod(s)) * 4 for k, s in shapes.items()},
                 "ms_per_frame": {}}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "checkpoint.pt"
        torch.save({"format": "lipstream-g4g", "version": 1, "config": gen.cfg.to_dict(),
                    "generator": gen.state_dict(), "step": 0}, str(ckpt))
        export_g4g(ckpt, Path(tmp) / "model", check=False)
        eng = OnnxRuntimeEngine(Path(tmp) / "model", threads=threads)
        rows0 = eng.add_avatar("bench", feats)
        for b in batches:
            mel = rng.uniform(-4, 2, (b, 1, 80, 16)).astype(np.float32)
            rows, gate = rows0[np.arange(b) % 4], np.ones(b, np.float32)
            tfeats = {k: torch.from_numpy(v[np.arange(b) % 4]) for k, v in feats.items()}
            tmel = torch.from_numpy(mel)
            with torch.no_grad():
                out["ms_per_frame"][f"batch{b}"] = {
                    "onnxruntime": _median_ms(lambda: eng.run(mel, rows, gate), repeats, b),
                    "torch": _median_ms(lambda: gen.step(tmel, **tfeats), repeats, b)}
    out["feature_bytes_per_frame_fp32"]["total"] = sum(out["feature_bytes_per_frame_fp32"].values())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.g4g.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", nargs="+", default=["tiny", "base"])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op and torch threads")
    args = p.parse_args(argv)
    doc = {"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                       "load_avg_1min": round(os.getloadavg()[0], 2)},
           "threads": args.threads, "repeats": args.repeats,
           "presets": {n: bench_preset(n, args.batches, args.repeats, args.threads) for n in args.presets}}
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
