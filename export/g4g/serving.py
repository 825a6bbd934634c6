"""A trained G4G run as a lipstream model: ``lipstream export --from g4g RUN/checkpoint.pt --out DIR``.

Writes, next to ``manifest.json`` (``kind="g4g"``):

* ``prepare.onnx``: ``(source_masked, refs, prior) -> ref, src, visual, vis_vec, source``, the
  audio-independent half (Es, Er, the landmark prior through Es, intra-modal alignment), run once
  per avatar frame when an avatar is prepared for this model;
* ``generator.onnx`` (and ``generator_fp16.onnx`` with ``--fp16``): the serving step
  ``(mel, rows, gate, *feature tables) -> (crops, params)`` (``export.serving_graph``): rows
  gathered in-graph, gate 0 = the silent window, RGB face out;
* ``generator.pt``: config + weights for the torch engine (``load_serving_generator``).

Opset 17; every GridSample node is asserted bilinear with a 4-D input, and ONNX Runtime is checked
against torch before the manifest is final.  The checkpoint is read with ``weights_only=True`` and
checked field by field: a wrong, foreign or truncated file is a ``CheckpointError`` naming what
was expected (the CLI prints it and exits 2).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

from engines.manifest import ModelManifest, sha256_file
from engines.mel import MelConvention
from engines.windows import WINDOW
from export.g4g.config import G4GConfig
from export.serving_graph import OPSET, PARAMS, check_grid_samples, check_serving_parity, export_serving_graphs, \
    serving_module, serving_shapes

log = logging.getLogger(__name__)

__all__ = ["CheckpointError", "load_checkpoint", "export_g4g", "load_serving_generator", "run", "KIND"]

KIND = "g4g"
FORMAT = "lipstream-g4g"
FORMAT_VERSION = 1
PREPARE_FILE = "prepare.onnx"
PREPARE_INPUTS = ("source_masked", "refs", "prior")
TORCH_WEIGHTS = "generator.pt"
EXPECTED = (f"a G4G checkpoint written by `lipstream train DATA --out RUN` (RUN/checkpoint.pt): a dict with "
            f"format={FORMAT!r}, version={FORMAT_VERSION}, config (G4GConfig fields) and generator (its state dict)")


class CheckpointError(ValueError):
    """A file that is not a loadable G4G checkpoint; the message says what was expected."""


def _read(path: Path) -> dict:
    import torch

    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; expected {EXPECTED}")
    try:
        ck = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle, zip and torch errors all mean "not this format"
        text = str(exc).strip()
        first = text.splitlines()[0].split(". ")[0][:160] if text else exc.__class__.__name__
        raise CheckpointError(f"{path} cannot be read as a weights-only torch checkpoint (truncated, or not a "
                              f"torch file: {first}); expected {EXPECTED}") from None
    if not isinstance(ck, dict):
        raise CheckpointError(f"{path} holds a {type(ck).__name__}, not a dict; expected {EXPECTED}")
    return ck


def load_checkpoint(path: Path | str):  # noqa: ANN201 - (G4G, dict)
    """The generator of a G4G run checkpoint (eval mode) and the checkpoint's ``train_info``."""
    from export.g4g.model import G4G

    path = Path(path)
    ck = _read(path)
    if ck.get("format") != FORMAT:
        hint = (" (it looks like a Wav2Lip checkpoint: use --from wav2lip or wav2lip-livetalking)"
                if "state_dict" in ck else "")
        raise CheckpointError(f"{path} has format {ck.get('format')!r}, not {FORMAT!r}{hint}; expected {EXPECTED}")
    if ck.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is G4G checkpoint version {ck.get('version')!r}; this lipstream reads "
                              f"version {FORMAT_VERSION}: export it with the lipstream that trained it")
    try:
        cfg = G4GConfig.from_dict(ck.get("config"))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} has an invalid config ({exc}); expected {EXPECTED}") from None
    state = ck.get("generator")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} has no generator state dict; expected {EXPECTED}")
    gen = G4G(cfg)
    try:
        gen.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: the generator weights do not fit a G4G of config {cfg.to_dict()} "
                              f"({str(exc).splitlines()[0][:200]} ...); expected {EXPECTED}") from None
    return gen.eval(), dict(ck.get("train_info") or {})


def load_serving_generator(weights: Path):  # noqa: ANN201 - the torch engine's builder (manifest.torch)
    """Rebuild the serving module from the artifact's ``generator.pt`` (config and state dict)."""
    import torch

    from export.g4g.model import G4G

    blob = torch.load(str(weights), map_location="cpu", weights_only=True)
    gen = G4G(G4GConfig.from_dict(blob["config"]))
    gen.load_state_dict(blob["state_dict"], strict=True)
    return serving_module(_step_module(gen.eval()), KIND)


def _step_module(gen):  # noqa: ANN001, ANN202
    """``gen.step`` as a module (so its weights are parameters of the exported graph, not constants)."""
    from torch import nn

    class Step(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gen = gen

        def forward(self, mel, *features):  # noqa: ANN001, ANN002, ANN202
            return self.gen.step(mel, *features)

    return Step().eval()


def _prepare_module(gen):  # noqa: ANN001, ANN202
    from torch import nn

    class Prepare(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gen = gen

        def forward(self, source_masked, refs, prior):  # noqa: ANN001, ANN202
            feats = self.gen.prepare(source_masked, refs, prior)
            return tuple(feats[k] for k in self.gen.FEATURE_KEYS)

    return Prepare().eval()


def export_prepare(gen, out_dir: Path) -> Path:  # noqa: ANN001
    """Write ``prepare.onnx`` (batch axis dynamic) for eval-mode ``gen``."""
    import onnx
    import torch

    cfg, s = gen.cfg, gen.cfg.size
    args = (torch.rand(2, 3, s, s), torch.rand(2, 3 * cfg.n_refs, s, s), torch.rand(2, 3, s, s))
    keys = list(gen.FEATURE_KEYS)
    path = Path(out_dir) / PREPARE_FILE
    with torch.no_grad():
        torch.onnx.export(_prepare_module(gen), args, str(path), opset_version=OPSET, dynamo=False,
                          input_names=list(PREPARE_INPUTS), output_names=keys,
                          dynamic_axes={k: {0: "batch"} for k in (*PREPARE_INPUTS, *keys)}, do_constant_folding=True)
    onnx.checker.check_model(str(path))
    return path


def face_convention(cfg: G4GConfig) -> dict:
    """What avatar preparation needs to build the prepare graph's inputs (``export.g4g.faces``)."""
    return {"size": cfg.size, "colour_order": "RGB", "scale": 1.0 / 255.0, "layout": "NCHW",
            "mask": {"zero_rows_from": cfg.mask_row}, "mask_from": cfg.mask_from, "n_refs": cfg.n_refs,
            "crop": "export.g4g.faces.crop_boxes: a square around the face mesh, one side per clip, centres smoothed",
            "references": "export.g4g.faces.pick_references(n_frames, n_refs): frames spread over the avatar, "
                          "the same for every frame; a still image repeated",
            "prior": "export.g4g.faces.landmark_prior of the frame's own crop landmarks (no lips or jaw)",
            "inputs": {"source_masked": ["batch", 3, cfg.size, cfg.size],
                       "refs": ["batch", 3 * cfg.n_refs, cfg.size, cfg.size], "prior": ["batch", 3, cfg.size, cfg.size]},
            "output": "face crop, RGB in [0, 1]"}


def _lookahead(train_info: dict) -> float:
    if "lookahead_s" in train_info:
        return float(train_info["lookahead_s"])
    from export.g4g.data import LOOKAHEAD_S  # the window placement `lipstream train` uses

    return float(LOOKAHEAD_S)


def export_g4g(ckpt: Path | str, out_dir: Path | str, *, fp16: bool = False, check: bool = True) -> ModelManifest:
    """Convert a G4G run checkpoint into a servable model directory; returns its manifest."""
    import torch

    gen, info = load_checkpoint(ckpt)
    info = json.loads(json.dumps(info, default=str))  # the manifest is JSON: paths, numpy scalars -> text
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prepare = export_prepare(gen, out_dir)
    keys = tuple(gen.FEATURE_KEYS)
    shapes = [gen.feature_shapes()[k] for k in keys]
    module = serving_module(_step_module(gen), KIND)
    files = export_serving_graphs(module, keys, shapes, out_dir, fp16)
    n_grid = {p: check_grid_samples(out_dir / f) for p, f in files.items()}
    torch.save({"config": gen.cfg.to_dict(), "state_dict": gen.state_dict()}, str(out_dir / TORCH_WEIGHTS))
    prepare_sha = sha256_file(prepare)
    inputs, outputs = serving_shapes(keys, shapes, gen.cfg.size)
    manifest = ModelManifest(
        name=f"{KIND}-{prepare_sha[:8]}", version="1", onnx=files,
        onnx_sha256={p: sha256_file(out_dir / f) for p, f in files.items()}, opset=OPSET, fps=25.0,
        lookahead_s=_lookahead(info), window=(80, WINDOW), audio=MelConvention().__dict__, crop_size=gen.cfg.size,
        params=PARAMS, feature_keys=keys,
        # the avatar features depend on these very weights: an avatar prepared for another model is refused
        features_version=int(prepare_sha[:7], 16), inputs=inputs, outputs=outputs,
        torch={"builder": "export.g4g.serving:load_serving_generator", "weights": TORCH_WEIGHTS,
               "sha256": sha256_file(out_dir / TORCH_WEIGHTS)},
        kind=KIND, prepare={"fp32": PREPARE_FILE}, face=face_convention(gen.cfg),
        extra={"source_checkpoint": Path(ckpt).name, "config": gen.cfg.to_dict(), "grid_sample_nodes": n_grid,
               "train_step": info.get("step"), "train_info": info},
    )
    manifest.save(out_dir)
    if check:
        diff = check_serving_parity(module, out_dir, keys, shapes, tol=1e-4)
        manifest = replace(manifest, extra={**manifest.extra, "parity_max_abs_diff": diff})
        manifest.save(out_dir)
    return manifest


def run(args: argparse.Namespace) -> int:
    """``lipstream export --from g4g RUN/checkpoint.pt --out DIR [--fp16]``."""
    if args.out is None:
        print("error: --from g4g needs --out DIR (the built-in model's directory is not overwritten)", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        m = export_g4g(args.checkpoint, args.out, fp16=args.fp16)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"out": str(args.out), "model": m.name, "kind": m.kind, "onnx": m.onnx, "prepare": m.prepare,
                      "face_size": m.crop_size, "lookahead_s": m.lookahead_s,
                      "torch_vs_onnxruntime_max_abs_diff": m.extra.get("parity_max_abs_diff"),
                      "seconds": round(time.perf_counter() - t0, 1),
                      "next": f"lipstream prepare --model {args.out} ... ; lipstream serve --model {args.out}"},
                     indent=2))
    return 0
