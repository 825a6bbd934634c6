"""Export the generator (audio net + renderer) to ONNX, check it, and write a model artifact.

Opset 17 with the legacy TorchScript exporter: GridSample is 4-D bilinear there, and TensorRT's
importer silently turns an unknown GridSample mode into NEAREST (DESIGN.md), so the mode
attribute of every GridSample node is asserted after export.  The FP16 variant is a genuinely
FP16 graph (inputs, weights and tables in half precision) because TensorRT 11 builds FP16 engines
only from strongly typed FP16 ONNX.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from engines.manifest import DEFAULT_MODEL_DIR, ModelManifest, sha256_file
from export.export_args import add_export_arguments
from engines.mel import MelConvention
from engines.windows import WINDOW

log = logging.getLogger(__name__)
OPSET = 17
MODEL_NAME = "lipstream-deform"
MODEL_VERSION = "0.1.0"
TORCH_WEIGHTS = "audio_net.pt"  # the PyTorch form, for the torch engine (manifest.torch)


def _example_inputs(features: dict[str, np.ndarray], keys: tuple[str, ...], batch: int = 2):
    import torch

    mel = torch.from_numpy(np.random.default_rng(0).uniform(-4, 2, (batch, 1, 80, WINDOW)).astype(np.float32))
    rows = torch.zeros(batch, dtype=torch.int64)
    gate = torch.ones(batch, dtype=torch.float32)
    tables = tuple(torch.from_numpy(np.ascontiguousarray(features[k], dtype=np.float32)) for k in keys)
    return mel, rows, gate, tables


def check_grid_sample_modes(model_path: Path) -> int:
    """Fail unless every GridSample node is explicitly bilinear; returns how many there are."""
    import onnx

    model = onnx.load(str(model_path))
    nodes = [n for n in model.graph.node if n.op_type == "GridSample"]
    for n in nodes:
        mode = {a.name: a.s.decode() for a in n.attribute if a.name == "mode"}.get("mode")
        if mode != "bilinear":
            raise RuntimeError(f"GridSample node {n.name} has mode {mode!r}, not 'bilinear'")
    return len(nodes)


def export_generator(out_dir: Path, *, fp16: bool = False, weights: Path | None = None,
                     features: dict[str, np.ndarray] | None = None, check: bool = True) -> ModelManifest:
    import onnx
    import torch

    from export.audio_net import WEIGHTS_PATH, load_checkpoint, load_default
    from export.avatar import default_avatars_dir, ensure_default_avatar
    from export.generator import PARAM_NAMES, Generator
    from export.renderer import MouthRenderer
    from export.features_version import FEATURES_VERSION

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = WEIGHTS_PATH if weights is None else Path(weights)
    audio_net = load_default(path=weights)
    meta = {k: v for k, v in load_checkpoint(weights).items() if k != "state_dict"}
    gen = Generator(audio_net, MouthRenderer()).eval()
    if features is None:
        features = ensure_default_avatar(default_avatars_dir()).features
    keys = gen.feature_keys
    mel, rows, gate, tables = _example_inputs(features, keys)
    crop_size = int(features["ref"].shape[-1])

    input_names = ["mel", "rows", "gate", *keys]
    dyn = {"mel": {0: "batch"}, "rows": {0: "batch"}, "gate": {0: "batch"},
           "crops": {0: "batch"}, "params": {0: "batch"}}
    dyn.update({k: {0: "avatar_rows"} for k in keys})
    variants = {"fp32": "generator.onnx"}
    if fp16:
        variants["fp16"] = "generator_fp16.onnx"
    hashes = {}
    for precision, fname in variants.items():
        path = out_dir / fname
        model = gen if precision == "fp32" else _half_copy(gen)
        dtype = torch.float32 if precision == "fp32" else torch.float16
        args = (mel.to(dtype), rows, gate.to(dtype), *(t.to(dtype) for t in tables))
        with torch.no_grad():
            torch.onnx.export(model, args, str(path), opset_version=OPSET, dynamo=False,
                              input_names=input_names, output_names=["crops", "params"],
                              dynamic_axes=dyn, do_constant_folding=True)
        onnx.checker.check_model(str(path))
        n_gs = check_grid_sample_modes(path)
        log.info("wrote %s (%d GridSample nodes, bilinear)", path, n_gs)
        hashes[precision] = sha256_file(path)

    torch_weights = out_dir / TORCH_WEIGHTS
    if weights.resolve() != torch_weights.resolve():
        shutil.copyfile(weights, torch_weights)
    manifest = ModelManifest(
        name=MODEL_NAME, version=MODEL_VERSION, onnx=variants, onnx_sha256=hashes, opset=OPSET,
        fps=25.0, lookahead_s=float(meta.get("lookahead_s", 0.04)), window=(80, WINDOW),
        audio=MelConvention().__dict__, crop_size=crop_size, params=PARAM_NAMES, feature_keys=keys,
        features_version=FEATURES_VERSION,
        inputs={"mel": ["batch", 1, 80, WINDOW], "rows": ["batch"], "gate": ["batch"],
                **{k: ["avatar_rows", *features[k].shape[1:]] for k in keys}},
        outputs={"crops": ["batch", 3, crop_size, crop_size], "params": ["batch", len(PARAM_NAMES)]},
        torch={"builder": "export.generator:load_generator", "weights": TORCH_WEIGHTS,
               "sha256": sha256_file(torch_weights)},
        extra={"audio_net": {k: v for k, v in meta.items() if isinstance(v, (str, int, float, dict, list))}},
    )
    manifest.save(out_dir)
    if check:
        parity = check_parity(gen, out_dir, manifest, features)
        log.info("torch vs onnxruntime max abs diff: %s", parity)
        worst = parity.get("fp32", 0.0)
        if worst > 1e-3:
            raise RuntimeError(f"ONNX Runtime output differs from torch by {worst:.2e} (> 1e-3)")
        manifest = replace(manifest, extra={**manifest.extra, "parity_max_abs_diff": parity})
        manifest.save(out_dir)
    return manifest


def _half_copy(gen):
    import copy

    return copy.deepcopy(gen).half()


def check_parity(gen, out_dir: Path, manifest: ModelManifest, features: dict[str, np.ndarray],
                 batch: int = 4) -> dict[str, float]:
    """Run torch and ONNX Runtime on the same random windows; returns max abs diff per precision."""
    import torch

    from engines.onnxruntime_engine import OnnxRuntimeEngine

    rng = np.random.default_rng(1)
    mel = rng.uniform(-4, 2, (batch, 1, 80, WINDOW)).astype(np.float32)
    n_rows = next(iter(features.values())).shape[0]
    rows = rng.integers(0, n_rows, batch).astype(np.int64)
    with torch.no_grad():
        ref_crops, _ = gen(torch.from_numpy(mel), torch.from_numpy(rows), torch.ones(batch),
                           *(torch.from_numpy(np.asarray(features[k], np.float32)) for k in gen.feature_keys))
    out = {}
    for precision in manifest.onnx:
        eng = OnnxRuntimeEngine(out_dir, precision=precision)
        eng.add_avatar("check", features)
        got = eng.run(mel, rows, np.ones(batch, np.float32)).crops
        out[precision] = float(np.abs(got - ref_crops.numpy()).max())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lipstream export", description=__doc__.split("\n\n")[0])
    add_export_arguments(p)
    return run(p.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    if getattr(args, "source", None):
        if args.checkpoint is None:
            print(f"error: --from {args.source} needs the checkpoint file: lipstream export --from {args.source} "
                  "CKPT --out DIR", file=sys.stderr)
            return 2
        if args.source == "g4g":
            from export.g4g.serving import run as run_g4g

            return run_g4g(args)
        from export.wav2lip_serving import run as run_wav2lip

        return run_wav2lip(args)
    if args.checkpoint is not None:
        print("error: a checkpoint is converted with --from wav2lip|wav2lip-livetalking|g4g", file=sys.stderr)
        return 2
    args.out = args.out or DEFAULT_MODEL_DIR
    if args.model != "default":
        print(f"error: unknown model {args.model!r}; only 'default' is built in", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    m = export_generator(args.out, fp16=args.fp16, weights=args.weights)
    print(json.dumps({"out": str(args.out), "onnx": m.onnx, "lookahead_s": m.lookahead_s,
                      "feature_keys": m.feature_keys,
                      "torch_vs_onnxruntime_max_abs_diff": m.extra.get("parity_max_abs_diff"),
                      "seconds": round(time.perf_counter() - t0, 1)}, indent=2))
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    raise SystemExit(main())
