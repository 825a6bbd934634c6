"""One batch size's GPU step: static device buffers, pinned host staging, optionally a CUDA graph.

Shared by the torch and TensorRT backends.  A backend supplies ``launch(mel, rows, gate)``, which
enqueues its work on the current stream reading those static device tensors and returns the
(crops, params) device tensors it wrote.  Because the buffers never move, the launch can be
captured once as a CUDA graph and each call becomes: three small host->device copies, one
``graph.replay()``, two device->host copies, one stream sync.

Calls are padded up to the step's size (silent window, row 0, gate 0), so a server captures a
handful of graphs (1, 2, 4, 8, ...) rather than one per odd batch.  "Silent" is the model's own
value for no audio (``engine.convention.silence_value``), which the backend passes in.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np

from engines.base import EngineOutput

log = logging.getLogger(__name__)

STEP_SIZES = (1, 2, 4, 8, 16, 32, 64)

Launch = Callable[[Any, Any, Any], tuple[Any, Any]]


def padded_size(n: int, sizes: tuple[int, ...] = STEP_SIZES) -> int:
    """The smallest step size that holds ``n`` items (``n`` itself beyond the largest)."""
    for s in sizes:
        if s >= n:
            return s
    return n


def sizes_upto(max_batch: int) -> tuple[int, ...]:
    """The step sizes a server needs for up to ``max_batch`` items: what it captures at start-up."""
    return tuple(s for s in STEP_SIZES if s <= padded_size(max_batch))


class CudaStep:
    def __init__(self, torch: Any, device: Any, size: int, window: tuple[int, int], *,
                 mel_dtype: Any, gate_dtype: Any, rows_dtype: Any = None, silence_value: float,
                 launch: Launch, stream: Any, graph: bool = True) -> None:
        t = self.torch = torch
        self.size = size
        self.silence_value = float(silence_value)
        self.stream = stream
        self.launch = launch
        self.mel = t.full((size, 1, *window), self.silence_value, device=device, dtype=mel_dtype)
        self.rows = t.zeros(size, device=device, dtype=rows_dtype or t.int64)
        self.gate = t.zeros(size, device=device, dtype=gate_dtype)
        self.h_mel = t.full((size, 1, *window), self.silence_value, dtype=t.float32).pin_memory()
        self.h_rows = t.zeros(size, dtype=t.int64).pin_memory()
        self.h_gate = t.zeros(size, dtype=t.float32).pin_memory()
        self.graph = None
        with t.inference_mode():
            # Warm-up launches on the side stream first (autotuning, lazy allocations, TensorRT's
            # deferred setup): a capture must not contain any of that.
            stream.wait_stream(t.cuda.current_stream(device))
            with t.cuda.stream(stream):
                for _ in range(2):
                    crops, params = launch(self.mel, self.rows, self.gate)
            t.cuda.current_stream(device).wait_stream(stream)
            if graph:
                self.graph = t.cuda.CUDAGraph()
                with t.cuda.graph(self.graph, stream=stream):
                    crops, params = launch(self.mel, self.rows, self.gate)
                    crops, params = crops.float(), params.float()
                log.info("captured a CUDA graph for batch %d", size)
        self.crops, self.params = crops, params
        self.h_crops = t.empty(tuple(crops.shape), dtype=t.float32).pin_memory()
        self.h_params = t.empty(tuple(params.shape), dtype=t.float32).pin_memory()

    def run(self, mel: np.ndarray, rows: np.ndarray, gate: np.ndarray) -> EngineOutput:
        t, n = self.torch, int(mel.shape[0])
        hm, hr, hg = self.h_mel.numpy(), self.h_rows.numpy(), self.h_gate.numpy()
        hm[:n], hr[:n], hg[:n] = mel, rows, gate
        hm[n:], hr[n:], hg[n:] = self.silence_value, 0, 0.0
        with t.inference_mode(), t.cuda.stream(self.stream):
            self.mel.copy_(self.h_mel, non_blocking=True)
            self.rows.copy_(self.h_rows, non_blocking=True)
            self.gate.copy_(self.h_gate, non_blocking=True)
            if self.graph is not None:
                self.graph.replay()
                crops, params = self.crops, self.params
            else:
                crops, params = self.launch(self.mel, self.rows, self.gate)
            self.h_crops.copy_(crops, non_blocking=True)
            self.h_params.copy_(params, non_blocking=True)
        self.stream.synchronize()
        # Copies: the pinned buffers are reused by the next call while the caller still composites.
        return EngineOutput(self.h_crops.numpy()[:n].copy(), self.h_params.numpy()[:n].copy())
