"""Measure a Wav2Lip model's cached-feature memory and ONNX Runtime CPU time, step vs full forward.

    python -m export.wav2lip.bench [--variants wav2lip wav2lip-livetalking] [--batches 1 8] [--repeats 5]

Random calibrated weights (timing and memory do not depend on the values).  For each variant it
exports prepare/step (fp32 and fp16) and, for comparison only, the whole generator as one graph
(``full``: mel + face6 -> crop, what a server without feature caching runs per frame), then

* memory: the bytes ONNX Runtime's prepare returns for one avatar frame (all skip levels), fp32
  and fp16;
* time: median wall time and process CPU time of ``step``, ``full`` and ``prepare`` per call at
  each batch size, ONNX Runtime CPU execution provider, default threads (all cores), after one
  warm-up call; the three calls alternate so that other load on the machine hits them alike.

Prints one JSON document (and writes it with --json PATH).
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

from export.wav2lip.spec import KINDS, MEL_SHAPE


def _time_interleaved(calls: dict, repeats: int) -> dict[str, tuple[float, float]]:
    """Median (wall s, process CPU s) per call name; the calls alternate so load hits all alike."""
    for sess, feeds in calls.values():
        sess.run(None, feeds)
    wall: dict[str, list[float]] = {k: [] for k in calls}
    cpu: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(repeats):
        for name, (sess, feeds) in calls.items():
            c0, t0 = time.process_time(), time.perf_counter()
            sess.run(None, feeds)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in calls}


def _export_full(gen, path: Path) -> None:
    import torch

    from export.wav2lip.onnx_export import OPSET, fold_batchnorm

    s = gen.spec.face_size
    args = (torch.zeros(2, *MEL_SHAPE), torch.zeros(2, 6, s, s))
    with torch.no_grad():
        torch.onnx.export(fold_batchnorm(gen), args, str(path), opset_version=OPSET, dynamo=False,
                          input_names=["mel", "face6"], output_names=["crop"],
                          dynamic_axes={"mel": {0: "batch"}, "face6": {0: "batch"}, "crop": {0: "batch"}})


def bench_variant(kind: str, batches: list[int], repeats: int, work: Path) -> dict:
    import onnxruntime as ort

    from export.wav2lip.models import calibrated_random
    from export.wav2lip.onnx_export import export_graphs

    gen = calibrated_random(kind, seed=0)
    spec = gen.spec
    out = work / kind
    out.mkdir(parents=True, exist_ok=True)
    files = export_graphs(gen, out, fp16=True)
    _export_full(gen, out / "full.onnx")
    sess = {name: ort.InferenceSession(str(out / name), providers=["CPUExecutionProvider"])
            for name in ("prepare.onnx", "prepare_fp16.onnx", "step.onnx", "full.onnx")}
    s = spec.face_size
    rng = np.random.default_rng(0)
    memory = {}
    for precision, dtype in (("fp32", np.float32), ("fp16", np.float16)):
        face6 = rng.uniform(0, 1, (1, 6, s, s)).astype(dtype)
        skips = sess[files[precision]["prepare"]].run(None, {"face6": face6})
        memory[precision] = {"bytes_per_frame": int(sum(x.nbytes for x in skips)),
                             "MiB_per_frame": round(sum(x.nbytes for x in skips) / 2**20, 3),
                             "MiB_per_250_frames": round(250 * sum(x.nbytes for x in skips) / 2**20, 1)}
    timing = {}
    for b in batches:
        face6 = rng.uniform(0, 1, (b, 6, s, s)).astype(np.float32)
        mel = rng.uniform(-4, 4, (b, *MEL_SHAPE)).astype(np.float32)
        skips = sess["prepare.onnx"].run(None, {"face6": face6})
        t = _time_interleaved({"step": (sess["step.onnx"], {"mel": mel, **dict(zip(spec.skip_names, skips))}),
                               "full": (sess["full.onnx"], {"mel": mel, "face6": face6}),
                               "prepare": (sess["prepare.onnx"], {"face6": face6})}, repeats)
        row = {}
        for name, (wall, cpu) in t.items():
            row[f"{name}_ms"] = round(1e3 * wall, 1)
            row[f"{name}_cpu_ms"] = round(1e3 * cpu, 1)
        row["step_ms_per_frame"] = round(1e3 * t["step"][0] / b, 1)
        row["full_ms_per_frame"] = round(1e3 * t["full"][0] / b, 1)
        row["step_over_full_wall"] = round(t["step"][0] / t["full"][0], 3)
        row["step_over_full_cpu"] = round(t["step"][1] / t["full"][1], 3)
        timing[f"batch{b}"] = row
    return {"face_size": s, "skip_elements_per_frame": spec.skip_elements_per_frame,
            "cached_features": memory, "onnxruntime_cpu": timing}


def main(argv: list[str] | None = None) -> int:
    import onnxruntime as ort

    p = argparse.ArgumentParser(prog="python -m export.wav2lip.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", nargs="+", default=list(KINDS), choices=KINDS)
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = p.parse_args(argv)
    result = {"command": "python -m export.wav2lip.bench " + " ".join(argv or []),
              "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "load_avg_before": [round(x, 2) for x in os.getloadavg()],
                          "onnxruntime": ort.__version__},
              "repeats": args.repeats, "variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.variants:
            result["variants"][kind] = bench_variant(kind, args.batches, args.repeats, Path(tmp))
    result["machine"]["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
