"""``python -m export.wav2lip CKPT --out DIR [--fp16] [--variant ...]``: convert a Wav2Lip checkpoint."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from export.wav2lip.spec import KIND_256, KIND_96, KINDS

EPILOG = f"""\
variants:
  {KIND_96:<20} Rudrabha/Wav2Lip's generator: wav2lip.pth, wav2lip_gan.pth (96x96 face)
  {KIND_256:<20} LiveTalking's larger generator: wav2lip256.pth (256x256 face)
  auto                 tell them apart from the checkpoint's parameters (default)

writes DIR/prepare.onnx, DIR/step.onnx (+ *_fp16.onnx with --fp16) and DIR/wav2lip.json,
the convention the server reads (face size, BGR, /255, mask, face box pads, mel window).
Exit status: 0 done, 2 the checkpoint cannot be used (the message says why), 1 other failure.
See docs/wav2lip.md.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export.wav2lip",
        description="Convert a Wav2Lip-family generator checkpoint (.pth) into ONNX prepare/step graphs "
                    "(opset 17, dynamic batch) plus a wav2lip.json describing their convention.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="CKPT", help="the generator checkpoint, e.g. wav2lip_gan.pth")
    p.add_argument("--out", required=True, metavar="DIR", help="model directory to write (created if missing)")
    p.add_argument("--fp16", action="store_true",
                   help="also write FP16 graphs (prepare_fp16.onnx, step_fp16.onnx; fp16 inputs and outputs)")
    p.add_argument("--variant", default="auto", choices=("auto", *KINDS),
                   help="which architecture the checkpoint is (default: auto-detect)")
    p.add_argument("--no-check", action="store_true",
                   help="skip the ONNX Runtime vs PyTorch parity check")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from export.wav2lip.checkpoint import CheckpointError
    from export.wav2lip.onnx_export import CONVENTION_NAME, export_wav2lip

    t0 = time.perf_counter()
    try:
        out = export_wav2lip(args.checkpoint, args.out, variant=args.variant, fp16=args.fp16,
                             check=not args.no_check)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    doc = json.loads((out / CONVENTION_NAME).read_text())
    print(json.dumps({"out": str(out), "kind": doc["kind"], "face_size": doc["face_size"],
                      "graphs": {p: {k: v["file"] for k, v in g.items()} for p, g in doc["graphs"].items()},
                      "parity": doc.get("parity", {}).get("torch_full_vs_onnxruntime_prepare_step"),
                      "seconds": round(time.perf_counter() - t0, 1)}, indent=2))
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    raise SystemExit(main())
