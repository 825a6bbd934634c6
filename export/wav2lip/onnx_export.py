"""Export a Wav2Lip-family checkpoint as two ONNX graphs (prepare, step) and describe them in JSON.

``export_wav2lip(ckpt, out_dir)`` writes::

    out_dir/prepare.onnx        face6 (B,6,S,S) -> skip0 .. skipN-1     (once per avatar frame)
    out_dir/step.onnx           mel (B,1,80,16), skip0 .. skipN-1 -> crop (B,3,S,S)   (per live frame)
    out_dir/prepare_fp16.onnx   the same graphs in FP16 (with fp16=True)
    out_dir/step_fp16.onnx
    out_dir/wav2lip.json        the convention (convention.py, docs/wav2lip.md)

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

import numpy as np

from export.wav2lip import convention as convention_doc
from export.wav2lip.convention import CONVENTION_NAME, LOOKAHEAD_S, PREPARE_INPUT, STEP_MEL, STEP_OUTPUT
from export.wav2lip.spec import KIND_256, KIND_96, MEL_SHAPE, Variant

log = logging.getLogger(__name__)

OPSET = 17
ALLOWED_OPS = frozenset({"Conv", "ConvTranspose", "Relu", "Add", "Concat", "Sigmoid"})
FILES = {"fp32": {"prepare": "prepare.onnx", "step": "step.onnx"},
         "fp16": {"prepare": "prepare_fp16.onnx", "step": "step_fp16.onnx"}}


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


# ops whose attributes carry a float dtype or value this converter does not rewrite
_DTYPE_OPS = frozenset({"ConstantOfShape", "RandomNormal", "RandomUniform", "RandomNormalLike",
                        "RandomUniformLike", "EyeLike", "Bernoulli", "Multinomial"})


def _fp16_tensor(t, what: str):
    from onnx import TensorProto, numpy_helper

    if t.data_type != TensorProto.FLOAT:
        return t
    arr = numpy_helper.to_array(t)
    if arr.size and np.abs(arr).max() > 65504:
        raise RuntimeError(f"{what} exceeds the FP16 range (max |x| {np.abs(arr).max():.3g})")
    return numpy_helper.from_array(arr.astype(np.float16), t.name)


def convert_fp16(src: Path, dst: Path, allowed_ops: frozenset[str] | None = None) -> None:
    """Rewrite an fp32 ONNX graph as a pure FP16 one: no Cast is added, float32 disappears.

    Float initializers and ``Constant`` values become float16, ``Cast(to=FLOAT)`` becomes
    ``Cast(to=FLOAT16)``, float graph inputs and outputs become float16; integer tensors are
    untouched.  ``allowed_ops``, if given (e.g. ALLOWED_OPS), is enforced; ops that carry a dtype
    in an attribute (ConstantOfShape, Random*, ...) or a subgraph are always refused.
    """
    import onnx
    from onnx import TensorProto

    model = onnx.load(str(src))
    g = model.graph
    for init in g.initializer:
        init.CopyFrom(_fp16_tensor(init, f"initializer {init.name}"))
    for node in g.node:
        if allowed_ops is not None and node.op_type not in allowed_ops:
            raise RuntimeError(f"{src.name}: op {node.op_type} is outside {sorted(allowed_ops)}")
        if node.op_type in _DTYPE_OPS or node.domain not in ("", "ai.onnx"):
            raise RuntimeError(f"{src.name}: cannot convert op {node.domain or ''}{node.op_type} to FP16")
        for attr in node.attribute:
            if node.op_type == "Constant" and attr.name == "value":
                attr.t.CopyFrom(_fp16_tensor(attr.t, f"Constant {node.name}"))
            elif node.op_type == "Constant" and attr.name in ("value_float", "value_floats"):
                raise RuntimeError(f"{src.name}: Constant {node.name} uses {attr.name}; cannot convert")
            elif node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16
            elif attr.type == onnx.AttributeProto.GRAPH:
                raise RuntimeError(f"{src.name}: op {node.op_type} has a subgraph; cannot convert")
    for vi in (*g.input, *g.output):
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            vi.type.tensor_type.elem_type = TensorProto.FLOAT16
    del g.value_info[:]
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
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
            convert_fp16(out_dir / files["fp32"][part], out_dir / files["fp16"][part], ALLOWED_OPS)
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
    doc = convention_doc.build(gen.spec, files, hashes, source, parity)
    (out_dir / CONVENTION_NAME).write_text(json.dumps(doc, indent=2) + "\n")
    log.info("exported %s (%s) to %s in %.1f s", ckpt_path, gen.kind, out_dir, time.perf_counter() - t0)
    return out_dir


__all__ = ["export_wav2lip", "export_graphs", "check_parity", "fold_batchnorm", "convert_fp16", "check_ops",
           "KIND_96", "KIND_256", "OPSET", "LOOKAHEAD_S", "CONVENTION_NAME", "ALLOWED_OPS"]
