"""The serving contract shared by the image generators (Wav2Lip family, G4G): module, ONNX, checks.

Every engine runs one graph ``(mel, rows, gate, *feature tables) -> (crops, params)``: the cached
avatar features are whole tables, gathered by ``rows`` inside the graph (so ONNX Runtime, the
torch engine's CUDA graphs and TensorRT batch sessions of different avatars in one call), and a
window whose voice gate is 0 is replaced by silence (the VAD closes the mouth).  The one mouth
parameter is that gate (``voice``): an image generator has no explicit opening.

This module wraps a generator's ``step(mel, *features) -> face`` in that contract, exports it at
opset 17 (fp32, and a genuinely fp16 copy for TensorRT FP16 engines), checks it (op histogram,
GridSample mode and rank) and compares ONNX Runtime with torch.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np

from engines.mel import SILENCE_VALUE
from engines.windows import WINDOW

log = logging.getLogger(__name__)

__all__ = ["SERVING_FILES", "PARAMS", "OPSET", "serving_module", "export_serving_graphs", "op_counts",
           "check_grid_samples", "check_serving_parity", "serving_shapes"]

OPSET = 17
SERVING_FILES = {"fp32": "generator.onnx", "fp16": "generator_fp16.onnx"}
PARAMS = ("voice",)


def serving_module(step, kind: str, flip_channels: bool = False):  # noqa: ANN001, ANN201 - torch modules
    """``step(mel, *features) -> face`` as the serving module; ``flip_channels`` turns a BGR face
    (Wav2Lip) into the RGB every engine returns."""
    import torch
    from torch import nn

    class ServingGenerator(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.step = step
            self.kind = kind

        def forward(self, mel: torch.Tensor, rows: torch.Tensor, gate: torch.Tensor,
                    *tables: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            voiced = (gate > 0.5).to(mel.dtype).view(-1, 1, 1, 1)
            mel = mel * voiced + (1.0 - voiced) * SILENCE_VALUE
            feats = [t.index_select(0, rows) for t in tables]
            face = self.step(mel, *feats)
            return (face.flip(1) if flip_channels else face), gate.view(-1, 1)

    return ServingGenerator().eval()


def serving_shapes(names: tuple[str, ...] | list[str], shapes: list[tuple[int, ...]], size: int
                   ) -> tuple[dict[str, list], dict[str, list]]:
    """The manifest's ``inputs`` / ``outputs`` of the serving graph."""
    inputs = {"mel": ["batch", 1, 80, WINDOW], "rows": ["batch"], "gate": ["batch"],
              **{k: ["avatar_rows", *shape] for k, shape in zip(names, shapes)}}
    return inputs, {"crops": ["batch", 3, size, size], "params": ["batch", 1]}


def _export_one(module, args: tuple, path: Path, names: list[str]) -> None:  # noqa: ANN001
    import onnx
    import torch

    dyn = {"mel": {0: "batch"}, "rows": {0: "batch"}, "gate": {0: "batch"}, "crops": {0: "batch"},
           "params": {0: "batch"}, **{k: {0: "avatar_rows"} for k in names}}
    with torch.no_grad():
        torch.onnx.export(module, args, str(path), opset_version=OPSET, dynamo=False,
                          input_names=["mel", "rows", "gate", *names], output_names=["crops", "params"],
                          dynamic_axes=dyn, do_constant_folding=True)
    onnx.checker.check_model(str(path))


def export_serving_graphs(module, names: tuple[str, ...] | list[str], shapes: list[tuple[int, ...]],
                          out_dir: Path, fp16: bool) -> dict[str, str]:  # noqa: ANN001
    """Write the serving graph (fp32; fp16 too if asked: the module itself in half precision, so
    weights, tables, mel and gate are FP16 with no Cast) -> {precision: file name}."""
    import torch

    names = list(names)
    b, n_rows = 2, 3
    args = (torch.zeros(b, 1, 80, WINDOW), torch.tensor([0, 2]), torch.ones(b),
            *(torch.rand(n_rows, *shape) for shape in shapes))
    path = Path(out_dir) / SERVING_FILES["fp32"]
    _export_one(module, args, path, names)
    log.info("wrote %s (ops: %s)", path, op_counts(path))
    files = {"fp32": SERVING_FILES["fp32"]}
    if fp16:
        half = copy.deepcopy(module).half()
        args16 = tuple(a.half() if a.is_floating_point() else a for a in args)
        _export_one(half, args16, Path(out_dir) / SERVING_FILES["fp16"], names)
        files["fp16"] = SERVING_FILES["fp16"]
    return files


def op_counts(path: Path) -> dict[str, int]:
    """Op histogram of an ONNX file."""
    import onnx

    ops: dict[str, int] = {}
    for node in onnx.load(str(path)).graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return ops


def check_grid_samples(path: Path) -> int:
    """Fail unless every GridSample node is bilinear with a 4-D input (opset 17 has only 4-D, and
    TensorRT silently imports an unknown mode as NEAREST: DESIGN.md); returns how many there are."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    ranks = {vi.name: len(vi.type.tensor_type.shape.dim)
             for vi in (*model.graph.value_info, *model.graph.input, *model.graph.output)
             if vi.type.tensor_type.HasField("shape")}
    nodes = [n for n in model.graph.node if n.op_type == "GridSample"]
    for n in nodes:
        mode = {a.name: a.s.decode() for a in n.attribute if a.name == "mode"}.get("mode")
        if mode != "bilinear":
            raise RuntimeError(f"{path.name}: GridSample node {n.name} has mode {mode!r}, not 'bilinear'")
        for tensor in n.input[:2]:
            if ranks.get(tensor) != 4:
                raise RuntimeError(f"{path.name}: GridSample node {n.name} input {tensor} has rank "
                                   f"{ranks.get(tensor)}, not 4")
    return len(nodes)


def check_serving_parity(module, model_dir: Path, names: tuple[str, ...] | list[str],  # noqa: ANN001
                         shapes: list[tuple[int, ...]], tol: float = 1e-3, seed: int = 0) -> float:
    """Max |ONNX Runtime engine - torch module| on random tables, one voiced and one gated row;
    RuntimeError above ``tol``."""
    import torch

    from engines.onnxruntime_engine import OnnxRuntimeEngine

    rng = np.random.default_rng(seed)
    feats = {k: rng.random((2, *shape), dtype=np.float32) for k, shape in zip(names, shapes)}
    mel = rng.uniform(-4, 2, (2, 1, 80, WINDOW)).astype(np.float32)
    rows, gate = np.array([1, 0]), np.array([1.0, 0.0], np.float32)
    with torch.no_grad():
        ref = module(torch.from_numpy(mel), torch.from_numpy(rows), torch.from_numpy(gate),
                     *(torch.from_numpy(feats[k]) for k in names))[0].numpy()
    eng = OnnxRuntimeEngine(model_dir)
    eng.add_avatar("parity", feats)
    got = eng.run(mel, eng.avatar_rows("parity")[rows], gate).crops
    diff = float(np.abs(got - ref).max())
    if diff > tol:
        raise RuntimeError(f"the serving graph in ONNX Runtime differs from torch by {diff:.2e} (> {tol:.0e})")
    log.info("serving graph: ONNX Runtime vs torch max abs diff %.2e", diff)
    return diff
