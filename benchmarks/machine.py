"""What machine a benchmark ran on, recorded in every result file so figures stay comparable."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import numpy as np
    import onnxruntime as ort

    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "numpy": np.__version__, "onnxruntime": ort.__version__,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def summarize_ms(samples_s: list[float] | Any) -> dict[str, float]:
    import numpy as np

    a = np.asarray(samples_s, np.float64) * 1000.0
    return {"n": int(a.size), "min_ms": float(a.min()), "p50_ms": float(np.percentile(a, 50)),
            "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean())}


def write_result(result: dict[str, Any], path: Path) -> None:
    """Write a benchmark's JSON result and say where it went."""
    import json
    import sys

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}", file=sys.stderr)


def save_figure(fig: Any, path: Path) -> None:
    """Lay out, write and close a matplotlib figure, and say where it went."""
    import sys

    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    print(f"wrote {path}", file=sys.stderr)


def publish(result: dict[str, Any], json_path: Path, plot_path: Path | None,
            print_table: Any, plot: Any) -> None:
    """How every benchmark ends: its table on stdout, its JSON, its plot (next to the JSON by default)."""
    print_table(result)
    write_result(result, json_path)
    plot(result, plot_path or json_path.with_suffix(".png"))
