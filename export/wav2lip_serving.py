"""A Wav2Lip-family checkpoint as a lipstream model: ``lipstream export --from wav2lip CKPT --out DIR``.

``export.wav2lip`` converts the checkpoint into its two graphs: ``prepare`` (the face encoder:
avatar pixels -> skip features, run once per avatar frame when the avatar is prepared for this
model) and ``step`` (mel window + skip features -> face).  This module wraps the step in the
serving contract every lipstream engine runs — ``(mel, rows, gate, *feature tables) -> (crops,
params)``, the cached skip features gathered by row inside the graph — so ONNX Runtime, the torch
engine (CUDA graphs) and TensorRT serve it unchanged and batch it across sessions, and writes the
manifest that tells the server the model's convention (lookahead, face size, BGR, mask, padding).
The contract itself (module, ONNX export, parity check) is ``export.serving_graph``, shared with G4G.

Inside the serving graph: a window whose voice gate is 0 is replaced by silence (the VAD closes
the mouth, as with the built-in model), and the face comes out in RGB (Wav2Lip works in BGR).
The one mouth parameter is that gate (``voice``): an image generator has no explicit opening.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from engines.manifest import ModelManifest, sha256_file
from engines.mel import MelConvention
from engines.windows import WINDOW
from export.serving_graph import PARAMS, check_serving_parity, export_serving_graphs, \
    serving_module, serving_shapes

log = logging.getLogger(__name__)

__all__ = ["export_for_serving", "load_serving_generator", "SOURCES"]

SOURCES = ("wav2lip", "wav2lip-livetalking")
TORCH_WEIGHTS = "generator.pt"


def _serving_module(step, kind: str):  # noqa: ANN001, ANN202 - torch modules
    """The Wav2Lip step in the serving contract; its face comes out BGR, the contract's is RGB."""
    return serving_module(step, kind, flip_channels=True)


def load_serving_generator(weights: Path):  # noqa: ANN201 - the torch engine's builder (manifest.torch)
    """Rebuild the serving module from the artifact's ``generator.pt`` (kind and state dict)."""
    import torch

    from export.wav2lip import Wav2LipGenerator, Wav2LipStep
    from export.wav2lip.onnx_export import fold_batchnorm

    blob = torch.load(str(weights), map_location="cpu", weights_only=True)
    gen = Wav2LipGenerator(blob["kind"])
    gen.load_state_dict(blob["state_dict"], strict=True)
    return _serving_module(Wav2LipStep(fold_batchnorm(gen.eval())), blob["kind"])


def export_for_serving(ckpt: Path | str, out_dir: Path | str, source: str = "wav2lip", *,
                       fp16: bool = False, check: bool = True) -> ModelManifest:
    """Convert ``ckpt`` (a ``wav2lip`` or ``wav2lip-livetalking`` checkpoint) into a servable model."""
    import torch

    from export.wav2lip import Wav2LipStep, export_wav2lip, load_generator, variant
    from export.wav2lip.onnx_export import CONVENTION_NAME, LOOKAHEAD_S, fold_batchnorm

    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    export_wav2lip(ckpt, out_dir, variant=source, fp16=fp16, check=check)
    conv = json.loads((out_dir / CONVENTION_NAME).read_text())
    gen = load_generator(ckpt, variant=source)
    spec = variant(source)
    module = _serving_module(Wav2LipStep(fold_batchnorm(gen)), source)
    files = export_serving_graphs(module, spec.skip_names, spec.skip_shapes, out_dir, fp16)
    torch.save({"kind": source, "state_dict": gen.state_dict()}, str(out_dir / TORCH_WEIGHTS))
    prepare_files = {p: conv["graphs"][p]["prepare"]["file"] for p in files}
    prepare_sha = sha256_file(out_dir / prepare_files["fp32"])
    s = spec.face_size
    inputs, outputs = serving_shapes(spec.skip_names, spec.skip_shapes, s)
    manifest = ModelManifest(
        name=f"{source}-{prepare_sha[:8]}", version="1", onnx=files,
        onnx_sha256={p: sha256_file(out_dir / f) for p, f in files.items()}, opset=17, fps=25.0,
        lookahead_s=LOOKAHEAD_S, window=(80, WINDOW), audio=MelConvention().__dict__, crop_size=s,
        params=PARAMS, feature_keys=tuple(spec.skip_names),
        # avatar features depend on these very weights: an avatar prepared for another checkpoint
        # (or the built-in model) is refused
        features_version=int(prepare_sha[:7], 16),
        inputs=inputs, outputs=outputs,
        torch={"builder": "export.wav2lip_serving:load_serving_generator", "weights": TORCH_WEIGHTS,
               "sha256": sha256_file(out_dir / TORCH_WEIGHTS)},
        kind=source, prepare=prepare_files, face=_face_convention(conv, s),
        extra={"source_checkpoint": str(Path(ckpt).name), "convention_file": CONVENTION_NAME},
    )
    manifest.save(out_dir)
    if check:
        check_serving_parity(module, out_dir, spec.skip_names, spec.skip_shapes)
    return manifest


def _face_convention(conv: dict, size: int) -> dict:
    """What avatar preparation needs to cut the generator's face: wav2lip.json's ``face`` section."""
    face = conv["face"]
    return {"size": size, "colour_order": face["colour_order"], "scale": float(face["scale"]),
            "pads": [int(v) for v in face["pads"]],  # top, bottom, left, right, as the project's inference
            "mask": {"zero_rows_from": int(face["mask"]["zero_rows_from"])},
            "input": "[lower half zeroed face, reference face] stacked on channels (6, S, S)",
            "output": "face crop, RGB in [0, 1] after the serving graph's flip"}


def run(args: argparse.Namespace) -> int:
    """``lipstream export --from KIND CKPT --out DIR [--fp16]``."""
    from export.wav2lip import CheckpointError

    if args.out is None:
        print("error: --from needs --out DIR (the built-in model's directory is not overwritten)", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        m = export_for_serving(args.checkpoint, args.out, args.source, fp16=args.fp16)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"out": str(args.out), "model": m.name, "kind": m.kind, "onnx": m.onnx,
                      "prepare": m.prepare, "face_size": m.crop_size, "lookahead_s": m.lookahead_s,
                      "seconds": round(time.perf_counter() - t0, 1),
                      "next": f"lipstream serve --model {args.out}   (or: lipstream render --model {args.out} ...)"},
                     indent=2))
    return 0
