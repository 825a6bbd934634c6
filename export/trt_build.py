"""Build a TensorRT engine from an exported ONNX: ``lipstream build-engine MODEL.onnx``.

* TensorRT 11 has no ``BuilderFlag.FP16``: FP16 comes from the FP16 ONNX in a *strongly typed*
  network (every tensor keeps the type the ONNX gives it).  On TensorRT 10 the FP16 flag is set
  instead, on whichever ONNX is given, and TensorRT picks FP16 kernels where they are faster.
* One optimisation profile: batch 1..max (tuned for ``--opt-batch``) and avatar feature rows
  1..``--max-avatar-rows`` (the tables of every loaded avatar, stacked).
* A timing cache next to the engines makes rebuilds (another profile, a new export) take seconds
  where the first build takes minutes.
* The plan goes to the engine cache under (ONNX sha256, TensorRT version, GPU name), with a JSON
  sidecar recording the profile and versions; the server finds it there (``--engine tensorrt``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from engines.manifest import ModelArtifactError, ModelManifest
from engines.tensorrt_engine import (TensorRTUnavailable, cuda_device_name, default_cache_dir, import_tensorrt,
                                     plan_key)

log = logging.getLogger(__name__)


def add_build_engine_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("onnx", type=Path, help="generator ONNX inside a model artifact (e.g. "
                   "engines/models/default/generator_fp16.onnx); its manifest.json must sit next to it")
    p.add_argument("--max-batch", type=int, default=32, help="largest batch (frames per call) (default: 32)")
    p.add_argument("--opt-batch", type=int, default=8,
                   help="batch size the kernels are tuned for: about the sessions you expect (default: 8)")
    p.add_argument("--max-avatar-rows", type=int, default=1024,
                   help="avatar frames, summed over every avatar loaded at once (default: 1024)")
    p.add_argument("--workspace-gb", type=float, default=4.0, help="builder scratch memory (default: 4)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="engine cache (default: $LIPSTREAM_ENGINE_CACHE or ~/.cache/lipstream/tensorrt)")
    p.add_argument("--force", action="store_true", help="rebuild even if a matching engine is cached")


def _precision_of(manifest: ModelManifest, onnx: Path) -> str:
    for precision, fname in manifest.onnx.items():
        if fname == onnx.name:
            return precision
    raise ModelArtifactError(f"{onnx.name} is not listed in {onnx.parent}/manifest.json ({manifest.onnx}); "
                             "pass one of the ONNX files `lipstream export` wrote")


def build_engine(onnx: Path, *, max_batch: int = 32, opt_batch: int = 8, max_avatar_rows: int = 1024,
                 workspace_gb: float = 4.0, cache_dir: Path | None = None, force: bool = False) -> Path:
    """Build (or find) the cached plan for ``onnx`` on this GPU; returns its path."""
    trt = import_tensorrt()
    gpu = cuda_device_name()
    onnx = Path(onnx).resolve()
    if not onnx.is_file():
        raise ModelArtifactError(f"{onnx} does not exist; export a model with `lipstream export --fp16 --out DIR`")
    manifest = ModelManifest.load(onnx.parent)
    precision = _precision_of(manifest, onnx)
    if not 1 <= opt_batch <= max_batch:
        raise ValueError(f"need 1 <= --opt-batch ({opt_batch}) <= --max-batch ({max_batch})")
    cache_dir = Path(cache_dir or default_cache_dir())
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = plan_key(manifest, precision, trt.__version__, gpu)
    plan = key.plan_path(cache_dir, manifest.name, precision)
    if plan.is_file() and not force:
        log.info("cached engine %s matches (ONNX hash, TensorRT %s, %s); --force rebuilds", plan, trt.__version__, gpu)
        return plan

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    has_fp16_flag = hasattr(trt.BuilderFlag, "FP16")
    strongly_typed = precision == "fp16" and not has_fp16_flag
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelArtifactError(f"TensorRT could not parse {onnx.name}: {errors}")
    _check_grid_samples(network, trt)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if precision == "fp16" and has_fp16_flag:  # TensorRT 10
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        inp = network.get_input(i)
        dims = tuple(inp.shape)[1:]
        if inp.name in ("mel", "rows", "gate"):
            lo, opt, hi = 1, opt_batch, max_batch
        else:  # avatar feature table
            lo, opt, hi = 1, min(256, max_avatar_rows), max_avatar_rows
        profile.set_shape(inp.name, (lo, *dims), (opt, *dims), (hi, *dims))
    config.add_optimization_profile(profile)
    timing_path = cache_dir / f"timing-{trt.__version__}-{_slug(gpu)}.cache"
    timing = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
    config.set_timing_cache(timing, ignore_mismatch=False)

    t0 = time.perf_counter()
    log.info("building a %s TensorRT %s engine for %s on %s (batch 1..%d, opt %d); this takes minutes",
             precision, trt.__version__, onnx.name, gpu, max_batch, opt_batch)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT failed to build the engine (see its log above)")
    seconds = time.perf_counter() - t0
    tmp = plan.with_suffix(".tmp")
    tmp.write_bytes(bytes(serialized))
    tmp.replace(plan)  # a server never sees half a plan
    timing_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    plan.with_suffix(".json").write_text(json.dumps({
        "model": manifest.name, "model_version": manifest.version, "precision": precision,
        "onnx": onnx.name, "onnx_sha256": key.onnx_sha256, "tensorrt": trt.__version__, "gpu": gpu,
        "strongly_typed": strongly_typed, "max_batch": max_batch, "opt_batch": opt_batch,
        "max_avatar_rows": max_avatar_rows, "build_seconds": round(seconds, 1),
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2) + "\n")
    log.info("wrote %s in %.0f s", plan, seconds)
    return plan


def _check_grid_samples(network, trt) -> None:  # noqa: ANN001
    """TensorRT's importer turns an unknown GridSample mode into NEAREST without a word: refuse."""
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type == trt.LayerType.GRID_SAMPLE:
            layer.__class__ = trt.IGridSampleLayer
            if layer.interpolation_mode != trt.InterpolationMode.LINEAR:
                raise ModelArtifactError(f"GridSample layer {layer.name} imported as {layer.interpolation_mode}, "
                                         "not LINEAR: re-export at opset 17 with 4-D bilinear GridSample")


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-").lower()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lipstream build-engine", description=__doc__.split("\n\n")[0])
    add_build_engine_arguments(p)
    return run(p.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    try:
        plan = build_engine(args.onnx, max_batch=args.max_batch, opt_batch=args.opt_batch,
                            max_avatar_rows=args.max_avatar_rows, workspace_gb=args.workspace_gb,
                            cache_dir=args.cache_dir, force=args.force)
    except TensorRTUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    print(plan)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    raise SystemExit(main())
