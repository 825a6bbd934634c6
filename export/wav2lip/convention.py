"""``wav2lip.json``: the self-describing convention written next to a Wav2Lip model's graphs.

Torch-free.  Everything a server or an avatar-preparation step needs to feed the graphs is here:
which file is which (and its sha256), tensor names/shapes/dtypes, how the 6-channel face input is
made from an avatar frame (face box, pads, resize, mask, colour order, scaling), what the output
is, the skip features ``prepare`` emits (order, shapes, per-frame size) and which mel window
belongs to video frame k.  docs/wav2lip.md documents every field.
"""

from __future__ import annotations

from typing import Any

from export.wav2lip.spec import MEL_SHAPE, Variant

FORMAT = "lipstream-wav2lip"
FORMAT_VERSION = 1
CONVENTION_NAME = "wav2lip.json"
PREPARE_INPUT = "face6"
STEP_MEL = "mel"
STEP_OUTPUT = "crop"
PADS = (0, 10, 0, 0)  # top, bottom, left, right: Wav2Lip inference.py's default --pads
FPS = 25.0
# Frame k's mel window in lipstream's own terms (engines.windows): the window's last mel frame is
# rint((k/fps + LOOKAHEAD_S) * 80); 0.1825 reproduces Wav2Lip's window start int(80 k / fps)
# exactly whenever the fractional part of 80 k / fps is below 0.9 (every k at 25, 30 and 50 fps).
LOOKAHEAD_S = 0.1825


def _tensor(shape: list, dtype: str) -> dict[str, Any]:
    return {"shape": shape, "dtype": dtype}


def graphs_section(spec: Variant, files: dict[str, dict[str, str]], hashes: dict[str, str]) -> dict[str, Any]:
    """Per precision and part: file, sha256, input and output names with shapes and dtypes."""
    s = spec.face_size
    skips = {n: ["batch", *shape] for n, shape in zip(spec.skip_names, spec.skip_shapes)}
    out = {}
    for precision, parts in files.items():
        dt = "float32" if precision == "fp32" else "float16"
        out[precision] = {
            "prepare": {"file": parts["prepare"], "sha256": hashes[parts["prepare"]],
                        "inputs": {PREPARE_INPUT: _tensor(["batch", 6, s, s], dt)},
                        "outputs": {n: _tensor(shape, dt) for n, shape in skips.items()}},
            "step": {"file": parts["step"], "sha256": hashes[parts["step"]],
                     "inputs": {STEP_MEL: _tensor(["batch", *MEL_SHAPE], dt),
                                **{n: _tensor(shape, dt) for n, shape in skips.items()}},
                     "outputs": {STEP_OUTPUT: _tensor(["batch", 3, s, s], dt)}},
        }
    return out


def face_section(size: int) -> dict[str, Any]:
    """How the step's face input is cut from an avatar frame (Wav2Lip's and LiveTalking's inference)."""
    half = size // 2
    return {
        "size": size, "layout": "NCHW", "colour_order": "BGR",
        "scale": 1.0 / 255.0, "scale_rule": "float32(pixel) / 255: uint8 0..255 -> 0..1",
        "pads": list(PADS), "pads_order": ["top", "bottom", "left", "right"],
        "box_rule": "from the face detector's rectangle (x1, y1, x2, y2) in the full frame (Wav2Lip: S3FD): "
                    "y1 = max(0, y1 - pad_top); y2 = min(H, y2 + pad_bottom); x1 = max(0, x1 - pad_left); "
                    "x2 = min(W, x2 + pad_right)",
        "box_smoothing": "Wav2Lip averages each frame's box with the next 4 (the last 5 at the end)",
        "crop": "frame[y1:y2, x1:x2] resized to (size, size) with cv2.resize (bilinear)",
        "mask": {"zero_rows_from": half, "zero_rows_to": size, "columns": "all",
                 "applies_to": "the masked copy (channels 0-2) only",
                 "rule": f"masked = face.copy(); masked[{half}:{size}, :, :] = 0  (rows H//2 .. H-1)"},
        "input_order": ["masked", "reference"],
        "channels": ["masked_b", "masked_g", "masked_r", "ref_b", "ref_g", "ref_r"],
        "reference": "the same avatar frame unmasked (what Wav2Lip and LiveTalking inference feed)",
    }


def output_section(size: int) -> dict[str, Any]:
    return {"name": STEP_OUTPUT, "shape": ["batch", 3, size, size], "layout": "NCHW", "colour_order": "BGR",
            "range": [0.0, 1.0], "activation": "sigmoid",
            "paste": "uint8(crop * 255) (Wav2Lip truncates), resized to (x2 - x1, y2 - y1), written over "
                     "frame[y1:y2, x1:x2] (Wav2Lip pastes the whole box, no blending)"}


def skips_section(spec: Variant) -> dict[str, Any]:
    levels = [{"name": n, "encoder_level": i, "shape": ["batch", *shape], "elements_per_frame": c * h * w}
              for i, (n, shape) in enumerate(zip(spec.skip_names, spec.skip_shapes)) for c, h, w in [shape]]
    per_frame = spec.skip_elements_per_frame
    return {"names": spec.skip_names,
            "order": "encoder order: skip0 is the first (largest) level and the last is 1x1; prepare emits "
                     "and step takes them in this order (step: mel first, then skip0 ..)",
            "levels": levels, "elements_per_frame": per_frame,
            "bytes_per_frame": {"fp32": per_frame * 4, "fp16": per_frame * 2}}


def audio_section() -> dict[str, Any]:
    from engines.mel import MelConvention

    return {
        "mel": MelConvention().__dict__,
        "input": {"name": STEP_MEL, "shape": ["batch", *MEL_SHAPE],
                  "axes": ["batch", "channel (1)", "mel band (80, low to high)", "mel frame (16, oldest first)"]},
        "fps": FPS, "window_frames": MEL_SHAPE[2],
        "window_of_frame": {
            "wav2lip_inference": "start = int(80 * k / fps); window = mel[:, start:start + 16] "
                                 "(a window past the end takes the last 16 mel frames)",
            "lipstream_lookahead_s": LOOKAHEAD_S,
            "lipstream_rule": "engines.windows.window_end(k, fps, lookahead_s) - 16 == int(80 * k / fps)",
            "meaning": "the window starts at the frame's own instant (mel frame j is centred on j/80 s) and "
                       "covers 16 frames = 200 ms ahead of it",
            "livetalking": "20 ms audio chunks with 10 chunks (200 ms) of left and of right context; the mel of "
                           "[left | 2B new chunks | right] is computed once per batch of B video frames and frame i "
                           "of the batch takes mel[:, 16 + int(3.2 i): +16]: a window starting at the frame's own "
                           "audio (the two chunks played with it), 200 ms ahead. The same placement as Wav2Lip, "
                           "re-gridded per batch (identical when 3.2 B is an integer)",
        },
    }


def build(spec: Variant, files: dict[str, dict[str, str]], hashes: dict[str, str],
          source: dict[str, Any] | None = None, parity: dict[str, Any] | None = None) -> dict[str, Any]:
    """The whole ``wav2lip.json`` document."""
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "kind": spec.kind, "title": spec.title,
        "opset": 17, "face_size": spec.face_size,
        "files": {p: dict(parts) for p, parts in files.items()},
        "sha256": dict(hashes),
        "graphs": graphs_section(spec, files, hashes),
        "face": face_section(spec.face_size),
        "output": output_section(spec.face_size),
        "skips": skips_section(spec),
        "audio": audio_section(),
        "source": source or {},
        "parity": parity or {},
    }
