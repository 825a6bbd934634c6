"""ONNX Runtime backend: the CPU path every machine has, and the parity reference for the others."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engines.base import Engine, EngineOutput
from engines.manifest import DEFAULT_MODEL_DIR


class OnnxRuntimeEngine(Engine):
    name = "onnxruntime"

    def __init__(self, model_dir: Path | str = DEFAULT_MODEL_DIR, *, precision: str = "fp32",
                 threads: int | None = None, providers: list[str] | None = None) -> None:
        super().__init__(model_dir)
        self.precision = self._check_precision(precision)
        import onnxruntime as ort  # deferred: importing it costs ~0.3 s

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # The event loop, the encoders and audio share the same few cores, and the sessions' frames
        # come batched: one thread by default.  A second one cut a batch-8 call's wall time by 8 %
        # (27.3 -> 25.2 ms) for 31 % more CPU per frame (3.38 -> 4.44 ms) on the 2-core build
        # machine (docs/benchmarks.md, "CPU per session").
        opts.intra_op_num_threads = threads or 1
        opts.inter_op_num_threads = 1
        # ORT's pool busy-waits between calls by default: ~40 ms of CPU burnt per 3 ms call, which
        # on a small machine starves the encoder and the other sessions (benchmarks/bench_concurrency).
        # Without it a call costs ~1 ms more wall time and a tenth of the CPU.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(
            str(self.manifest.onnx_path(self.model_dir, precision)), opts,
            providers=providers or ["CPUExecutionProvider"])
        self._dtype = np.float16 if precision == "fp16" else np.float32
        self._cast_tables: dict[str, np.ndarray] = {}

    def run(self, mel: np.ndarray, rows: np.ndarray, gate: np.ndarray) -> EngineOutput:
        feeds = {"mel": np.ascontiguousarray(mel, dtype=self._dtype),
                 "rows": np.ascontiguousarray(rows, dtype=np.int64),
                 "gate": np.ascontiguousarray(gate, dtype=self._dtype)}
        feeds.update(self._cast_tables)
        crops, params = self.session.run(["crops", "params"], feeds)
        return EngineOutput(crops.astype(np.float32, copy=False), params.astype(np.float32, copy=False))

    def _tables_changed(self) -> None:
        # A new dict each time (``run`` on another thread keeps the one it read); FP32 tables are
        # not copied.
        self._cast_tables = {k: v.astype(self._dtype, copy=False) for k, v in self.tables.items()}
