"""Export a Wav2Lip-family checkpoint as two ONNX graphs (prepare, step) and describe them in JSON.

``export_wav2lip(ckpt, out_dir)`` writes::

    out_dir/prepare.onnx        face6 (B,6,S,S) -> skip0 .. skipN-1     (once per avatar frame)
    out_dir/step.onnx           mel (B,1,80,16), skip0 .. skipN-1 -> crop (B,3,S,S)   (per live frame)
    out_dir/prepare_fp16.onnx   the same graphs in FP16 (with fp16=True)
    out_dir/step_fp16.onnx
    out_dir/wav2lip.json        the convention (docs/wav2lip.md)

Opset 17, legacy TorchScript exporter, batch axis dynamic.  BatchNorm is folded into the
preceding Conv / ConvTranspose before export (in float64), so the graphs hold only Conv,
ConvTranspose, Relu, Add, Concat and Sigmoid: ops TensorRT imports natively.  The FP16 graphs
are genuinely FP16 (weights, inputs and outputs in half precision; no Cast nodes) because
TensorRT 11 builds FP16 engines only from strongly typed FP16 ONNX (DESIGN.md); the fp32 graphs
are converted, not re-traced, so both precisions have the same nodes.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from export.wav2lip.spec import KIND_256, KIND_96, MEL_SHAPE, Variant

log = logging.getLogger(__name__)

OPSET = 17
CONVENTION_NAME = "wav2lip.json"
FORMAT_VERSION = 1
ALLOWED_OPS = frozenset({"Conv", "ConvTranspose", "Relu", "Add", "Concat", "Sigmoid"})
FILES = {"fp32": {"prepare": "prepare.onnx", "step": "step.onnx"},
         "fp16": {"prepare": "prepare_fp16.onnx", "step": "step_fp16.onnx"}}
PREPARE_INPUT = "face6"
STEP_MEL = "mel"
STEP_OUTPUT = "crop"
# Frame k's mel window in lipstream's own terms (engines.windows): the last mel frame of the
# window is rint((k/fps + LOOKAHEAD_S) * 80); 0.1825 reproduces Wav2Lip's int(80 k / fps) + 15
# exactly whenever the fractional part of 80 k / fps is below 0.9 (every k at 25, 30 and 50 fps).
LOOKAHEAD_S = 0.1825


# --------------------------------------------------------------------------------------------
# BatchNorm folding


def fold_batchnorm(gen):
    """A copy of ``gen`` with every conv unit's BatchNorm folded into its convolution (eval only)."""
    import torch
    from torch import nn

    folded = copy.deepcopy(gen).eval()
    with torch.no_grad():
        for module in folded.modules():
            seq = getattr(module, "conv_block", None)
            if not (isinstance(seq, nn.Sequential) and len(seq) == 2 and isinstance(seq[1], nn.BatchNorm2d)):
                continue
            conv, bn = seq[0], seq[1]
            scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
            bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
            new_bias = (bias - bn.running_mean.double()) * scale + bn.bias.double()
            w = conv.weight.double()
            if isinstance(conv, nn.ConvTranspose2d):  # weight (cin, cout/groups, kh, kw)
                w = w * scale.view(1, -1, 1, 1)
            else:  # weight (cout, cin/groups, kh, kw)
                w = w * scale.view(-1, 1, 1, 1)
            conv.weight.copy_(w.to(conv.weight.dtype))
            if conv.bias is None:
                conv.bias = nn.Parameter(new_bias.to(conv.weight.dtype))
            else:
                conv.bias.copy_(new_bias.to(conv.bias.dtype))
            seq[1] = nn.Identity()
    return folded


# --------------------------------------------------------------------------------------------
# ONNX graphs


def _export(module, args: tuple, path: Path, input_names: list[str], output_names: list[str]) -> None:
    import torch

    dyn = {name: {0: "batch"} for name in (*input_names, *output_names)}
    with torch.no_grad():
        torch.onnx.export(module, args, str(path), opset_version=OPSET, dynamo=False,
                          input_names=input_names, output_names=output_names,
                          dynamic_axes=dyn, do_constant_folding=True)


def check_ops(path: Path) -> dict[str, int]:
    """Op histogram of ``path``; raises RuntimeError on any op outside ALLOWED_OPS."""
    import onnx

    model = onnx.load(str(path))
    hist: dict[str, int] = {}
    for node in model.graph.node:
        hist[node.op_type] = hist.get(node.op_type, 0) + 1
    extra = sorted(set(hist) - ALLOWED_OPS)
    if extra:
        raise RuntimeError(f"{path.name} contains ops outside the TensorRT-safe set {sorted(ALLOWED_OPS)}: {extra}")
    if model.opset_import[0].version != OPSET:
        raise RuntimeError(f"{path.name} has opset {model.opset_import[0].version}, expected {OPSET}")
    return hist


def convert_fp16(src: Path, dst: Path) -> None:
    """Rewrite an fp32 graph of ALLOWED_OPS as a pure FP16 graph (weights, inputs, outputs)."""
    import onnx
    from onnx import TensorProto, numpy_helper

    model = onnx.load(str(src))
    g = model.graph
    for init in g.initializer:
        if init.data_type == TensorProto.FLOAT:
            arr = numpy_helper.to_array(init)
            if np.abs(arr).max(initial=0) > 65504:
                raise RuntimeError(f"weight {init.name} exceeds the FP16 range (max |w| {np.abs(arr).max():.3g})")
            init.CopyFrom(numpy_helper.from_array(arr.astype(np.float16), init.name))
    for node in g.node:
        if node.op_type not in ALLOWED_OPS:
            raise RuntimeError(f"cannot convert op {node.op_type} to FP16")
    for vi in (*g.input, *g.output):
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            vi.type.tensor_type.elem_type = TensorProto.FLOAT16
    del g.value_info[:]
    model = onnx.shape_inference.infer_shapes(model)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))


def export_graphs(gen, out_dir: Path, fp16: bool = False) -> dict[str, dict[str, str]]:
    """Write prepare/step ONNX (fp32, and fp16 if asked) for eval-mode ``gen``; returns FILES subset."""
    import onnx
    import torch

    from export.wav2lip.models import Wav2LipPrepare, Wav2LipStep

    spec: Variant = gen.spec
    folded = fold_batchnorm(gen)
    size = spec.face_size
    face6 = torch.rand(2, 6, size, size)
    mel = torch.rand(2, *MEL_SHAPE) * 8 - 4
    with torch.no_grad():
        skips = Wav2LipPrepare(folded)(face6)
    names = spec.skip_names
    files = {"fp32": dict(FILES["fp32"])}
    _export(Wav2LipPrepare(folded), (face6,), out_dir / files["fp32"]["prepare"], [PREPARE_INPUT], names)
    _export(Wav2LipStep(folded), (mel, *skips), out_dir / files["fp32"]["step"], [STEP_MEL, *names], [STEP_OUTPUT])
    for part in ("prepare", "step"):
        path = out_dir / files["fp32"][part]
        onnx.checker.check_model(str(path))
        log.info("wrote %s %s", path, check_ops(path))
    if fp16:
        files["fp16"] = dict(FILES["fp16"])
        for part in ("prepare", "step"):
            convert_fp16(out_dir / files["fp32"][part], out_dir / files["fp16"][part])
            check_ops(out_dir / files["fp16"][part])
    return files


# --------------------------------------------------------------------------------------------
# Parity


def _session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def check_parity(gen, out_dir: Path, files: dict[str, dict[str, str]], batch: int = 2,
                 seed: int = 1) -> dict[str, dict[str, float]]:
    """Torch (unfolded) full forward vs ONNX Runtime prepare -> step, per precision.

    Returns ``{precision: {"max_abs": .., "mean_abs": .., "skip_max_rel": ..}}`` on random
    lower-half-masked faces and random mel windows in [-4, 4].
    """
    import torch

    spec: Variant = gen.spec
    rng = np.random.default_rng(seed)
    size = spec.face_size
    face = rng.uniform(0, 1, (batch, 3, size, size)).astype(np.float32)
    face6 = np.concatenate([face, face], axis=1)
    face6[:, :3, size // 2:] = 0
    mel = rng.uniform(-4, 4, (batch, *MEL_SHAPE)).astype(np.float32)
    with torch.no_grad():
        ref = gen(torch.from_numpy(mel), torch.from_numpy(face6)).numpy()
    out = {}
    for precision, parts in files.items():
        dtype = np.float32 if precision == "fp32" else np.float16
        prep, step = _session(out_dir / parts["prepare"]), _session(out_dir / parts["step"])
        skips = prep.run(None, {PREPARE_INPUT: face6.astype(dtype)})
        feeds = {STEP_MEL: mel.astype(dtype), **dict(zip(spec.skip_names, skips))}
        got = step.run(None, feeds)[0].astype(np.float32)
        diff = np.abs(got - ref)
        out[precision] = {"max_abs": float(diff.max()), "mean_abs": float(diff.mean())}
    return out


# --------------------------------------------------------------------------------------------
# The convention file


def convention(spec: Variant, files: dict[str, dict[str, str]], hashes: dict[str, str],
               source: dict[str, Any] | None = None, parity: dict | None = None) -> dict[str, Any]:
    """The self-describing JSON written next to the graphs (documented in docs/wav2lip.md)."""
    from engines.mel import MelConvention

    size = spec.face_size
    skips = [{"name": n, "shape": ["batch", *shape], "elements_per_frame": int(np.prod(shape)),
              "encoder_level": i}
             for i, (n, shape) in enumerate(zip(spec.skip_names, spec.skip_shapes))]
    per_frame = spec.skip_elements_per_frame
    graphs = {}
    for precision, parts in files.items():
        dt = "float32" if precision == "fp32" else "float16"
        graphs[precision] = {
            "prepare": {"file": parts["prepare"], "sha256": hashes[parts["prepare"]],
                        "inputs": {PREPARE_INPUT: {"shape": ["batch", 6, size, size], "dtype": dt}},
                        "outputs": {s["name"]: {"shape": s["shape"], "dtype": dt} for s in skips}},
            "step": {"file": parts["step"], "sha256": hashes[parts["step"]],
                     "inputs": {STEP_MEL: {"shape": ["batch", *MEL_SHAPE], "dtype": dt},
                                **{s["name"]: {"shape": s["shape"], "dtype": dt} for s in skips}},
                     "outputs": {STEP_OUTPUT: {"shape": ["batch", 3, size, size], "dtype": dt}}},
        }
    return {
        "format": "lipstream-wav2lip", "format_version": FORMAT_VERSION,
        "kind": spec.kind, "title": spec.title, "opset": OPSET,
        "face_size": size,
        "graphs": graphs,
        "face_input": {
            "layout": "NCHW",
            "channels": ["masked_b", "masked_g", "masked_r", "ref_b", "ref_g", "ref_r"],
            "order": ["masked", "reference"],
            "colour_order": "BGR",
            "scale": "pixel / 255 (uint8 0..255 -> 0..1)",
            "resize": f"face box crop resized to {size}x{size} (cv2.resize, INTER_LINEAR)",
            "mask": {"rows_zeroed": [size // 2, size], "channels": [0, 1, 2],
                     "rule": f"masked = face.copy(); masked[{size // 2}:{size}, :, :] = 0 "
                             "(lower half, rows H//2..H-1, all columns)"},
            "reference": "the same avatar frame, unmasked (Wav2Lip and LiveTalking inference)",
        },
        "face_box": {
            "detector": "S3FD face rectangle (x1, y1, x2, y2) in the full frame (Wav2Lip's face_detection)",
            "pads": {"top": 0, "bottom": 10, "left": 0, "right": 0},
            "rule": "y1 = max(0, top - pad_top); y2 = min(H, bottom + pad_bottom); "
                    "x1 = max(0, left - pad_left); x2 = min(W, right + pad_right)",
            "smoothing": "each box is the mean of boxes i..i+4 (the last 5 near the end), before cropping",
            "crop": "frame[y1:y2, x1:x2]",
        },
        "output": {
            "name": STEP_OUTPUT, "layout": "NCHW", "colour_order": "BGR", "range": [0.0, 1.0],
            "activation": "sigmoid",
            "paste": "crop * 255 -> uint8, resized to (x2 - x1, y2 - y1), written into frame[y1:y2, x1:x2]",
        },
        "skips": {
            "names": spec.skip_names,
            "order": "encoder order: skip0 is the first (largest) level, the last is 1x1; "
                     "step takes them after mel in this order",
            "levels": skips,
            "elements_per_frame": per_frame,
            "bytes_per_frame": {"fp32": per_frame * 4, "fp16": per_frame * 2},
        },
        "audio": {
            "mel": MelConvention().__dict__,
            "input": {"name": STEP_MEL, "shape": ["batch", *MEL_SHAPE],
                      "axes": ["batch", "channel", "mel band (80, low to high)", "mel frame (16, oldest first)"]},
            "fps": 25.0,
            "window_frames": 16,
            "window_of_frame": {
                "wav2lip_inference": "start = int(80 * k / fps); window = mel[:, start:start + 16] "
                                     "(past the end: the last 16 mel frames)",
                "lipstream_lookahead_s": LOOKAHEAD_S,
                "lipstream_rule": "engines.windows.window_end(k, fps, lookahead_s) gives the same window",
                "livetalking": "audio in 20 ms chunks with 10 chunks (200 ms) of left and of right context; "
                               "the mel of [left | 2B new chunks | right] is computed per batch of B video "
                               "frames and frame i of the batch takes mel[:, 16 + int(3.2 i): +16], i.e. a "
                               "window starting at the frame's own audio and reaching 200 ms ahead: the same "
                               "placement as Wav2Lip, re-gridded per batch (identical when 3.2 B is an integer)",
            },
        },
        "source": source or {},
        "parity": parity or {},
    }


def export_wav2lip(ckpt_path: Path | str, out_dir: Path | str, variant: str = "auto", fp16: bool = False,
                   check: bool = True) -> Path:
    """Convert a Wav2Lip-family checkpoint into a model directory; returns ``out_dir``.

    Raises ``CheckpointError`` for a file that is not a loadable generator of ``variant``.
    """
    from engines.manifest import sha256_file
    from export.wav2lip.checkpoint import load_generator

    t0 = time.perf_counter()
    ckpt_path, out_dir = Path(ckpt_path), Path(out_dir)
    gen = load_generator(ckpt_path, variant)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = export_graphs(gen, out_dir, fp16=fp16)
    hashes = {f: sha256_file(out_dir / f) for parts in files.values() for f in parts.values()}
    parity = None
    if check:
        parity = check_parity(gen, out_dir, files)
        worst = parity["fp32"]["max_abs"]
        if worst > 1e-4:
            raise RuntimeError(f"ONNX Runtime fp32 output differs from torch by {worst:.2e} (> 1e-4)")
        parity = {"torch_full_vs_onnxruntime_prepare_step": parity, "batch": 2,
                  "inputs": "random masked faces in [0,1], random mel in [-4,4]"}
    source = {"checkpoint": ckpt_path.name, "checkpoint_sha256": sha256_file(ckpt_path),
              "public_names": list(gen.spec.checkpoint_names)}
    doc = convention(gen.spec, files, hashes, source, parity)
    (out_dir / CONVENTION_NAME).write_text(json.dumps(doc, indent=2) + "\n")
    log.info("exported %s (%s) to %s in %.1f s", ckpt_path, gen.kind, out_dir, time.perf_counter() - t0)
    return out_dir


__all__ = ["export_wav2lip", "export_graphs", "check_parity", "fold_batchnorm", "convert_fp16", "convention",
           "KIND_96", "KIND_256", "OPSET", "LOOKAHEAD_S"]
