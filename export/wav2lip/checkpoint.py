"""Load a user's Wav2Lip-family checkpoint safely and strictly, or say exactly what is wrong with it.

Accepted files (what the public checkpoints and their re-saves look like):

* ``{"state_dict": {...}, ...}`` (``wav2lip.pth``, ``wav2lip_gan.pth``, ``wav2lip256.pth``; extra
  entries such as ``optimizer``, ``global_step`` are ignored), or a bare ``state_dict``;
* keys with or without the ``module.`` prefix ``nn.DataParallel`` adds;
* fp32 or fp16 tensors (converted to fp32).

Loading is ``torch.load(weights_only=True)``: a file that needs arbitrary unpickling (a whole
pickled model, a foreign object) is refused rather than executed.  Matching is strict: every
expected key, no extra key, every shape equal.  The one tolerance is BatchNorm's
``num_batches_tracked`` counters (absent from checkpoints saved by very old PyTorch; they do not
affect inference).  Every failure is a :class:`CheckpointError` whose message says what was
expected and, where it recognises the file, what it looks like instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from export.wav2lip.spec import KIND_256, KIND_96, KINDS, variant as get_variant

PREFIX = "module."
_TRACKED = "num_batches_tracked"
_LIST = 6  # how many offending keys a message names


class CheckpointError(ValueError):
    """A checkpoint that is not a loadable Wav2Lip-family generator; the message says why."""


def _names(keys, n: int = _LIST) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:n])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def read_checkpoint(path: Path | str) -> Any:
    """``torch.load(weights_only=True)`` with its failure modes turned into CheckpointError."""
    import re

    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except MemoryError:
        raise
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, KeyError, EOFError, ...
        text = str(exc)
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if found:
            raise CheckpointError(
                f"not a plain-tensor PyTorch checkpoint: {path} holds pickled Python objects "
                f"({found.group(1)}) that safe loading (torch.load weights_only=True) refuses to run; "
                "re-save it as {'state_dict': model.state_dict()} where it was made") from exc
        found = re.search(r"WeightsUnpickler error:\s*(.+)", text)
        reason = (found.group(1) if found else (text.strip().splitlines() or [type(exc).__name__])[0]).strip()
        if len(reason) > 100 and ". " in reason:
            reason = reason.split(". ")[0]
        if not reason or reason.isdigit():
            reason = f"{type(exc).__name__} {reason}".strip()
        size = path.stat().st_size
        hint = ("empty file" if size == 0 else
                "the file looks truncated or corrupt: download it again"
                if any(w in text for w in ("zip archive", "central directory", "unexpected EOF", "corrupt"))
                or isinstance(exc, EOFError) else
                f"{size} bytes that are neither a torch zip archive nor a tensor pickle")
        raise CheckpointError(f"not a PyTorch checkpoint: {path}: {reason} ({hint})") from exc


def extract_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, Any]:
    """The generator's tensors from a loaded checkpoint, ``module.`` prefixes stripped."""
    import torch

    if isinstance(obj, Mapping) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{source} holds a {type(obj).__name__}, not a state_dict (a mapping of parameter names to "
            "tensors, optionally inside {'state_dict': ...})")
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{source}: key {key!r} is not a parameter name; not a state_dict")
        name = key
        while name.startswith(PREFIX):
            name = name[len(PREFIX):]
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{source}: entry {key!r} is a {type(value).__name__}, not a tensor; expected a state_dict "
                f"of tensors (top-level keys: {_names(map(str, obj.keys()))})")
        if name in out:
            raise CheckpointError(f"{source}: key {name!r} appears twice (with and without {PREFIX!r})")
        out[name] = value
    if not out:
        raise CheckpointError(f"{source} holds an empty state_dict")
    return out


def _expected(kind: str) -> dict[str, tuple[int, ...]]:
    from export.wav2lip.models import expected_state_shapes

    return _EXPECTED.setdefault(kind, expected_state_shapes(kind))


_EXPECTED: dict[str, dict[str, tuple[int, ...]]] = {}


def _mismatches(state: Mapping[str, Any], kind: str) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, shape mismatches) of ``state`` against ``kind``."""
    exp = _expected(kind)
    missing = [k for k in exp if k not in state and not k.endswith(_TRACKED)]
    unexpected = [k for k in state if k not in exp]
    shapes = [f"{k}: checkpoint {list(state[k].shape)} vs expected {list(exp[k])}"
              for k in exp if k in state and tuple(state[k].shape) != exp[k]]
    return missing, unexpected, shapes


def _recognise(state: Mapping[str, Any]) -> str | None:
    """What a non-generator file looks like, when it is another Wav2Lip-family network."""
    keys = set(state)
    if any(k.startswith("face_encoder.") for k in keys) and any(k.startswith("audio_encoder.") for k in keys):
        return "a SyncNet (lip-sync expert) checkpoint such as lipsync_expert.pth, not the generator"
    if any(k.startswith("binary_pred.") for k in keys):
        return "a visual-quality discriminator checkpoint such as visual_quality_disc.pth, not the generator"
    return None


def detect_variant(state: Mapping[str, Any]) -> str:
    """The variant whose parameters ``state`` matches exactly (CheckpointError if none)."""
    scores = {}
    for kind in KINDS:
        missing, unexpected, shapes = _mismatches(state, kind)
        if not (missing or unexpected or shapes):
            return kind
        scores[kind] = len(missing) + len(unexpected) + len(shapes)
    closest = min(scores, key=scores.get)
    _raise_for(state, closest, auto=True)
    raise AssertionError("unreachable")


def _raise_for(state: Mapping[str, Any], kind: str, auto: bool = False) -> None:
    missing, unexpected, shapes = _mismatches(state, kind)
    if not (missing or unexpected or shapes):
        return
    spec = get_variant(kind)
    other = KIND_256 if kind == KIND_96 else KIND_96
    o_missing, o_unexpected, o_shapes = _mismatches(state, other)
    if not (o_missing or o_unexpected or o_shapes):
        o = get_variant(other)
        raise CheckpointError(
            f"this checkpoint is the {other} variant ({o.title}), not {kind} ({spec.title}); "
            f"export it with --variant {other} or --variant auto")
    what = _recognise(state)
    if what is not None:
        raise CheckpointError(f"this checkpoint looks like {what}; expected a {spec.title} generator")
    exp = _expected(kind)
    if len(missing) == len([k for k in exp if not k.endswith(_TRACKED)]):
        raise CheckpointError(
            f"not a Wav2Lip generator checkpoint: none of the {len(exp)} expected parameters "
            f"(e.g. face_encoder_blocks.0.0.conv_block.0.weight) is present; it holds {_names(state)}")
    parts = []
    if shapes:
        parts.append(f"shape mismatch at {shapes[0]}" + (f" (and {len(shapes) - 1} more)" if len(shapes) > 1 else ""))
    if missing:
        parts.append(f"missing keys {_names(missing)}")
    if unexpected:
        parts.append(f"unexpected keys {_names(unexpected)}")
    lead = ("matches neither Wav2Lip variant; closest is" if auto else "does not match")
    raise CheckpointError(f"checkpoint {lead} {kind} ({spec.title}): " + "; ".join(parts))


def load_generator(path: Path | str, variant: str = "auto"):
    """Build the generator for ``path`` (``variant`` "auto", "wav2lip" or "wav2lip-livetalking").

    Returns an eval-mode fp32 ``Wav2LipGenerator`` with the checkpoint's weights loaded strictly.
    """
    if variant != "auto" and variant not in KINDS:
        raise CheckpointError(f"unknown variant {variant!r}; choose auto, {', '.join(KINDS)}")
    state = extract_state_dict(read_checkpoint(path), source=str(path))
    return generator_from_state(state, variant)


def generator_from_state(state: Mapping[str, Any], variant: str = "auto"):
    """The eval-mode generator for an already extracted ``state`` (see :func:`load_generator`)."""
    import torch

    from export.wav2lip.models import Wav2LipGenerator

    kind = detect_variant(state) if variant == "auto" else variant
    _raise_for(state, kind)
    gen = Wav2LipGenerator(kind)
    full = dict(state)
    for k, v in gen.state_dict().items():
        if k.endswith(_TRACKED) and k not in full:
            full[k] = v
    bad = [k for k, v in full.items() if not (v.is_floating_point() or k.endswith(_TRACKED))]
    if bad:
        raise CheckpointError(f"checkpoint tensors {_names(bad)} are not floating point")
    full = {k: (v if k.endswith(_TRACKED) else v.to(torch.float32)) for k, v in full.items()}
    gen.load_state_dict(full, strict=True)
    return gen.eval()
