"""A real engine behind a gate: records each call's batch size and, while the gate is closed,
holds the worker thread inside ``run`` — so a test can see a tick find the worker busy without
sleeping or timing anything.  Not a test file; tests import it."""

from __future__ import annotations

import threading


class GatedEngine:
    def __init__(self, engine, *, open_: bool = True) -> None:  # noqa: ANN001 - engines.base.Engine
        self.engine = engine
        self.manifest, self.convention = engine.manifest, engine.convention
        self.name, self.precision = "gated", engine.precision
        self.batches: list[int] = []
        self.entered = threading.Event()  # set once a call is inside run
        self._gate = threading.Event()
        if open_:
            self._gate.set()

    def add_avatar(self, *a):  # noqa: ANN002, ANN201
        return self.engine.add_avatar(*a)

    def remove_avatar(self, name: str) -> None:
        self.engine.remove_avatar(name)

    def hold(self) -> None:
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def run_skipping_silence(self, mel, rows, gate):  # noqa: ANN001, ANN201 - whole batches, counted
        return self.run(mel, rows, gate)

    def run(self, mel, rows, gate):  # noqa: ANN001, ANN201
        self.batches.append(int(mel.shape[0]))
        self.entered.set()
        if not self._gate.wait(timeout=30):
            raise TimeoutError("the test never released the gated engine")
        return self.engine.run(mel, rows, gate)
