"""Pick an inference backend by name; ``auto`` takes the fastest one this machine can run.

Fastest first: a cached TensorRT plan for this model on this GPU, then the torch engine on CUDA
(FP16 + CUDA graphs), then ONNX Runtime on the CPU.  ``auto`` never builds a TensorRT engine (that
takes minutes: `lipstream build-engine`), and says in the log why it skipped a faster backend.
"""

from __future__ import annotations

import logging
from pathlib import Path

from engines.base import Engine
from engines.manifest import DEFAULT_MODEL_DIR, ModelArtifactError, ModelManifest

log = logging.getLogger(__name__)

BACKENDS = ("auto", "tensorrt", "torch", "onnxruntime")


def create_engine(name: str = "auto", model_dir: Path | str = DEFAULT_MODEL_DIR, **kwargs) -> Engine:
    if name not in BACKENDS:
        raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "auto":
        name = pick_backend(model_dir)
    if name == "tensorrt":
        from engines.tensorrt_engine import TensorRTEngine, TensorRTUnavailable

        try:
            engine: Engine = TensorRTEngine(model_dir, **kwargs)
        except TensorRTUnavailable as exc:
            raise ModelArtifactError(str(exc)) from None
    elif name == "torch":
        from engines.torch_engine import TorchEngine

        engine = TorchEngine(model_dir, **kwargs)
    else:
        from engines.onnxruntime_engine import OnnxRuntimeEngine

        engine = OnnxRuntimeEngine(model_dir, **kwargs)
    log.info("inference engine: %s (%s, %s)", engine.name, engine.manifest.name,
             engine.precision)
    return engine


def pick_backend(model_dir: Path | str = DEFAULT_MODEL_DIR) -> str:
    """The fastest backend usable here for this model, logging why faster ones were passed over."""
    manifest = ModelManifest.load(model_dir)
    from engines.tensorrt_engine import TensorRTUnavailable, find_plan

    try:
        find_plan(manifest, "fp16" if "fp16" in manifest.onnx else "fp32")
        return "tensorrt"
    except (TensorRTUnavailable, ModelArtifactError) as exc:
        log.info("engine auto: not tensorrt (%s)", _first_clause(exc))
    from engines.torch_engine import torch_cuda_available

    if not manifest.torch:
        log.info("engine auto: not torch (the model has no PyTorch weights)")
    elif torch_cuda_available():
        return "torch"
    else:
        log.info("engine auto: not torch (no CUDA device, or torch is not installed)")
    return "onnxruntime"


def _first_clause(exc: Exception) -> str:
    return str(exc).split(";")[0].split(": build")[0]
