"""Pick an inference backend by name; ``auto`` takes the fastest one this machine can run."""

from __future__ import annotations

import logging
from pathlib import Path

from engines.base import Engine
from engines.manifest import DEFAULT_MODEL_DIR

log = logging.getLogger(__name__)

BACKENDS = ("auto", "onnxruntime")


def create_engine(name: str = "auto", model_dir: Path | str = DEFAULT_MODEL_DIR, **kwargs) -> Engine:
    if name not in BACKENDS:
        raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(BACKENDS)}")
    # Only ONNX Runtime exists so far; TensorRT and Torch-CUDA backends slot in here, fastest first.
    from engines.onnxruntime_engine import OnnxRuntimeEngine

    engine = OnnxRuntimeEngine(model_dir, **kwargs)
    log.info("inference engine: %s (%s)", engine.name, engine.manifest.name)
    return engine
