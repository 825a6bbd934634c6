"""TensorRT backend: a prebuilt engine (``lipstream build-engine``) run with ``execute_async_v3``.

Engines are built ahead of time and cached under a key of (ONNX sha256, TensorRT version, GPU
name): a server start only ever *loads* a plan.  If none matches, the server refuses with the
command that builds one, instead of silently spending minutes building it.

Device memory comes from torch (the GPU machines have it; torch-tensorrt is on the design card):
the avatar tables are uploaded once, each batch size has its own execution context with static
input/output buffers, optionally captured as a CUDA graph (``engines.cuda_step``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engines.base import Engine, EngineOutput
from engines.cuda_step import CudaStep, padded_size, sizes_upto
from engines.manifest import DEFAULT_MODEL_DIR, ModelArtifactError, ModelManifest

log = logging.getLogger(__name__)

SUPPORTED_MAJOR = (10, 11)
INSTALL_HINT = ("install TensorRT 10 or 11 for your CUDA version (pip install tensorrt) on a machine "
                "with an NVIDIA GPU, or use --engine torch / --engine onnxruntime")


class TensorRTUnavailable(RuntimeError):
    """TensorRT (or a CUDA device) is missing; the message says what to install or use instead."""


def import_tensorrt() -> Any:
    """``tensorrt``, or TensorRTUnavailable saying why not (missing, wrong version, no GPU)."""
    try:
        import tensorrt as trt
    except ImportError as exc:  # also the registry's download stub, which fails on import
        raise TensorRTUnavailable(f"TensorRT is not installed (import tensorrt: {exc}); {INSTALL_HINT}") from None
    except Exception as exc:  # noqa: BLE001 - broken installs raise all sorts
        raise TensorRTUnavailable(f"TensorRT failed to import ({exc.__class__.__name__}: {exc}); {INSTALL_HINT}") from None
    major = int(str(trt.__version__).split(".")[0])
    if major not in SUPPORTED_MAJOR:
        raise TensorRTUnavailable(f"TensorRT {trt.__version__} is not supported (need 10.x or 11.x)")
    return trt


def cuda_device_name() -> str:
    try:
        import torch
    except ImportError:
        raise TensorRTUnavailable("the TensorRT backend needs PyTorch with CUDA for device memory "
                                  "(pip install torch)") from None
    if not torch.cuda.is_available():
        raise TensorRTUnavailable("no CUDA device is visible (torch.cuda.is_available() is False); "
                                  "TensorRT engines need an NVIDIA GPU")
    return torch.cuda.get_device_name(0)


def default_cache_dir() -> Path:
    """``$LIPSTREAM_ENGINE_CACHE``, else ``$XDG_CACHE_HOME/lipstream/tensorrt`` (``~/.cache/...``)."""
    env = os.environ.get("LIPSTREAM_ENGINE_CACHE")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "lipstream" / "tensorrt"


@dataclass(frozen=True)
class PlanKey:
    """What a serialized engine is valid for: one ONNX file, one TensorRT version, one GPU model."""

    onnx_sha256: str
    trt_version: str
    gpu: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(f"{self.onnx_sha256}|{self.trt_version}|{self.gpu}".encode()).hexdigest()[:20]

    def plan_path(self, cache_dir: Path, model: str, precision: str) -> Path:
        return Path(cache_dir) / f"{model}-{precision}-{self.digest}.plan"


def plan_key(manifest: ModelManifest, precision: str, trt_version: str, gpu: str) -> PlanKey:
    if precision not in manifest.onnx_sha256:
        raise ModelArtifactError(f"model {manifest.name} has no {precision} ONNX; "
                                 f"re-export with `lipstream export{' --fp16' if precision == 'fp16' else ''}`")
    return PlanKey(manifest.onnx_sha256[precision], trt_version, gpu)


def find_plan(manifest: ModelManifest, precision: str, cache_dir: Path | None = None) -> Path:
    """The cached plan for this model on this machine, or ModelArtifactError naming the build command."""
    trt = import_tensorrt()
    key = plan_key(manifest, precision, trt.__version__, cuda_device_name())
    path = key.plan_path(cache_dir or default_cache_dir(), manifest.name, precision)
    if not path.is_file():
        raise ModelArtifactError(
            f"no TensorRT engine for model {manifest.name} ({precision}) on this GPU and TensorRT "
            f"{trt.__version__} in {path.parent}: build one first with "
            f"`lipstream build-engine MODEL_DIR/{manifest.onnx[precision]}` (a server never builds silently)")
    return path


_TORCH_DTYPES = {"FLOAT": "float32", "HALF": "float16", "INT32": "int32", "INT64": "int64", "BOOL": "bool"}


class TensorRTEngine(Engine):
    name = "tensorrt"

    def __init__(self, model_dir: Path | str = DEFAULT_MODEL_DIR, *, precision: str = "fp16",
                 cache_dir: Path | None = None, cuda_graphs: bool = True) -> None:
        super().__init__(model_dir)
        self.precision = self._check_precision(precision)
        trt = import_tensorrt()
        import torch

        self.trt, self.torch = trt, torch
        self.plan_path = find_plan(self.manifest, precision, cache_dir)
        self._logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self._logger)
        self.engine = runtime.deserialize_cuda_engine(self.plan_path.read_bytes())
        if self.engine is None:
            raise ModelArtifactError(f"{self.plan_path} could not be deserialized (built by another "
                                     "TensorRT?): rebuild it with `lipstream build-engine --force`")
        self.device = torch.device("cuda", 0)
        self.io = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.dtypes = {n: getattr(torch, _TORCH_DTYPES[self.engine.get_tensor_dtype(n).name]) for n in self.io}
        self.max_batch = int(self.engine.get_tensor_profile_shape("mel", 0)[2][0])
        key = self.manifest.feature_keys[0]
        self.max_rows = int(self.engine.get_tensor_profile_shape(key, 0)[2][0])
        self.use_graphs = cuda_graphs
        self._stream = torch.cuda.Stream(self.device)
        self._dev_tables: dict[str, Any] = {}
        self._steps: dict[int, CudaStep] = {}
        self.name = f"tensorrt-{precision}"
        log.info("TensorRT %s engine %s (batch <= %d, avatar rows <= %d)", trt.__version__,
                 self.plan_path.name, self.max_batch, self.max_rows)

    def _tables_changed(self) -> None:
        """Upload the tables as they are now; refuses (and the add is undone) beyond the plan's rows."""
        n = self.table_rows
        if not self.tables:
            self._dev_tables = {}
            self._steps.clear()
            return
        if n > self.max_rows:
            raise ModelArtifactError(
                f"avatars need {n} feature rows but the TensorRT engine was built for <= {self.max_rows}: "
                f"rebuild with `lipstream build-engine --max-avatar-rows {max(n, 2 * self.max_rows)} --force`")
        self._dev_tables = {k: self.torch.from_numpy(self.tables[k]).to(self.device, self.dtypes[k])
                            for k in self.manifest.feature_keys}
        self._steps.clear()

    def _launcher(self, size: int):  # noqa: ANN202
        """A launch for one batch size: its own execution context and output buffers."""
        t = self.torch
        ctx = self.engine.create_execution_context()
        s = self.manifest.crop_size
        crops = t.empty((size, 3, s, s), device=self.device, dtype=self.dtypes["crops"])
        params = t.empty((size, len(self.manifest.params)), device=self.device, dtype=self.dtypes["params"])
        for k, tab in self._dev_tables.items():
            ctx.set_input_shape(k, tuple(tab.shape))
            ctx.set_tensor_address(k, tab.data_ptr())
        ctx.set_tensor_address("crops", crops.data_ptr())
        ctx.set_tensor_address("params", params.data_ptr())

        def launch(mel, rows, gate):  # noqa: ANN001, ANN202
            for name, x in (("mel", mel), ("rows", rows), ("gate", gate)):
                ctx.set_input_shape(name, tuple(x.shape))
                ctx.set_tensor_address(name, x.data_ptr())
            if not ctx.execute_async_v3(t.cuda.current_stream(self.device).cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log above)")
            return crops, params

        launch.context = ctx  # keep it alive as long as the step
        return launch

    def warmup_batches(self, max_batch: int) -> tuple[int, ...]:
        """Every padded step size up to ``max_batch``: each is a CUDA graph capture (~0.1-1 s)."""
        return sizes_upto(max_batch)

    def run(self, mel: np.ndarray, rows: np.ndarray, gate: np.ndarray) -> EngineOutput:
        n = int(mel.shape[0])
        if n > self.max_batch:  # larger than the profile: split
            parts = [self.run(mel[i:i + self.max_batch], rows[i:i + self.max_batch], gate[i:i + self.max_batch])
                     for i in range(0, n, self.max_batch)]
            return EngineOutput(np.concatenate([p.crops for p in parts]), np.concatenate([p.params for p in parts]))
        size = min(padded_size(n), self.max_batch)
        step = self._steps.get(size)
        if step is None:
            step = self._steps[size] = CudaStep(
                self.torch, self.device, size, self.manifest.window, mel_dtype=self.dtypes["mel"],
                gate_dtype=self.dtypes["gate"], rows_dtype=self.dtypes["rows"],
                silence_value=self.convention.silence_value, stream=self._stream,
                graph=self.use_graphs, launch=self._launcher(size))
        return step.run(mel, rows, gate)


def read_plan_info(plan: Path) -> dict[str, Any]:
    """The sidecar JSON ``build-engine`` writes next to a plan (profile, versions, build time)."""
    side = plan.with_suffix(".json")
    return json.loads(side.read_text()) if side.is_file() else {}
