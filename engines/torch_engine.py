"""Torch backend: the generator in PyTorch, FP16 + CUDA graphs on a GPU, FP32 eager on a CPU.

This is the GPU path that can be verified on machines with CUDA but no TensorRT.  The artifact
names its PyTorch builder and weights in ``manifest.torch`` (written by ``lipstream export``), so
this module never guesses which network an artifact holds.

On CUDA:

* the avatar feature tables live on the device (uploaded once per ``add_avatar``);
* every call copies only the mel windows, rows and gates host->device through pinned staging
  buffers, and the outputs back once;
* each batch size gets its own captured CUDA graph with static input/output buffers, so a call is
  one ``graph.replay()`` instead of ~100 kernel launches from Python.  Graphs are padded to the
  next captured size (1, 2, 4, 8, ...) so a server does not capture a graph per odd batch.  New
  avatar tables (an avatar added or removed) move the table addresses, so the graphs are
  re-captured lazily.

Torch is imported when the engine is created, never at module import (the serving install has no
torch).
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from engines.base import Engine, EngineOutput
from engines.cuda_step import CudaStep, padded_size, sizes_upto
from engines.manifest import DEFAULT_MODEL_DIR, ModelArtifactError

log = logging.getLogger(__name__)

def torch_cuda_available() -> bool:
    """True when torch imports and sees a CUDA device (without creating a context otherwise)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


class TorchEngine(Engine):
    name = "torch"

    def __init__(self, model_dir: Path | str = DEFAULT_MODEL_DIR, *, device: str | None = None,
                 precision: str | None = None, cuda_graphs: bool = True, threads: int | None = None) -> None:
        super().__init__(model_dir)
        try:
            import torch
        except ImportError as exc:
            raise ModelArtifactError("the torch engine needs PyTorch: pip install torch "
                                     "(or choose --engine onnxruntime)") from exc
        self.torch = torch
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ModelArtifactError("--engine torch on cuda: torch sees no CUDA device here")
        # FP16 where it pays (tensor cores); CPU half kernels are slow or missing.
        self.precision = self._check_precision(precision or ("fp16" if self.device.type == "cuda" else "fp32"))
        self.dtype = torch.float16 if self.precision == "fp16" else torch.float32
        if self.device.type == "cpu" and threads:
            torch.set_num_threads(threads)
        self.model = load_torch_generator(self.model_dir, self.manifest.torch).to(self.device, self.dtype).eval()
        self.use_graphs = bool(cuda_graphs and self.device.type == "cuda")
        self.name = f"torch-{self.device.type}"
        self._dev_tables: tuple[Any, ...] = ()
        self._steps: dict[int, CudaStep] = {}
        self._stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    def _tables_changed(self) -> None:
        """Upload the tables as they are now (rows reused or dropped by ``remove_avatar`` included)."""
        t, tables = self.torch, self.tables
        self._dev_tables = tuple(t.from_numpy(tables[k]).to(self.device, self.dtype)
                                 for k in self.manifest.feature_keys) if tables else ()
        self._steps.clear()  # captured graphs point at the old tables

    def warmup_batches(self, max_batch: int) -> tuple[int, ...]:
        """Every padded step size up to ``max_batch``: each is a CUDA graph capture (~0.1-1 s)."""
        if self.device.type != "cuda":
            return super().warmup_batches(max_batch)
        return sizes_upto(max_batch)

    def run(self, mel: np.ndarray, rows: np.ndarray, gate: np.ndarray) -> EngineOutput:
        n = int(mel.shape[0])
        if self.device.type == "cuda":
            size = padded_size(n)
            step = self._steps.get(size)
            if step is None:
                tables = self._dev_tables
                step = self._steps[size] = CudaStep(
                    self.torch, self.device, size, self.manifest.window, mel_dtype=self.dtype,
                    gate_dtype=self.dtype, silence_value=self.convention.silence_value,
                    stream=self._stream, graph=self.use_graphs,
                    launch=lambda m, r, g: self.model(m, r, g, *tables))
            return step.run(mel, rows, gate)
        t = self.torch
        with t.inference_mode():
            crops, params = self.model(
                t.from_numpy(np.ascontiguousarray(mel, np.float32)).to(self.device, self.dtype),
                t.from_numpy(np.ascontiguousarray(rows, np.int64)).to(self.device),
                t.from_numpy(np.ascontiguousarray(gate, np.float32)).to(self.device, self.dtype),
                *self._dev_tables)
            return EngineOutput(crops.float().cpu().numpy(), params.float().cpu().numpy())


def load_torch_generator(model_dir: Path, spec: dict[str, str]):  # noqa: ANN201 - a torch.nn.Module
    """Build the artifact's PyTorch generator from ``manifest.torch``: ``{"builder": "module:function",
    "weights": "file"}``; the builder takes the weights path and returns an eval-mode module."""
    if not spec or "builder" not in spec or "weights" not in spec:
        raise ModelArtifactError(
            f"{model_dir} has no PyTorch weights (manifest.torch is empty): re-export it with "
            "`lipstream export --out DIR`, or choose --engine onnxruntime")
    weights = Path(model_dir) / spec["weights"]
    if not weights.is_file():
        raise ModelArtifactError(f"{weights} is missing: re-export the model with `lipstream export --out {model_dir}`")
    module_name, _, func = spec["builder"].partition(":")
    try:
        builder = getattr(importlib.import_module(module_name), func)
    except (ImportError, AttributeError) as exc:
        raise ModelArtifactError(f"cannot load the torch builder {spec['builder']!r} ({exc}); "
                                 "install lipstream with the [export] extra") from exc
    return builder(weights)
