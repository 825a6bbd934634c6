"""The concurrency and cold-start benchmarks run end to end with tiny settings.

Checks the structure of what they write and basic sanity (frames flowed, times are positive),
not the figures: those depend on the machine and its load.  About a minute on 2 cores.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np


def test_histogram_quantile_interpolates_within_buckets() -> None:
    from benchmarks.bench_concurrency import histogram_quantile, parse_metrics

    text = "\n".join([
        "# HELP x y",
        'lat_bucket{le="0.02"} 0.0', 'lat_bucket{le="0.04"} 10.0', 'lat_bucket{le="0.06"} 60.0',
        'lat_bucket{le="+Inf"} 100.0', "lat_count 100.0",
    ])
    m = parse_metrics(text)
    assert m['lat_bucket{le="+Inf"}'] == 100.0 and m["lat_count"] == 100.0
    buckets = sorted((float(k.split('"')[1]), v) for k, v in m.items() if k.startswith("lat_bucket"))
    assert math.isclose(histogram_quantile(0.5, buckets), 0.056)
    assert histogram_quantile(0.99, buckets) == 0.06  # in +Inf: the largest finite bound
    assert histogram_quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]) is None


def test_window_stats() -> None:
    from benchmarks.load_client import window_stats

    t = np.arange(0, 5, 0.04)
    t = np.delete(t, 60)  # one frame late: an 80 ms gap
    s = window_stats(t, 1.0, 4.0)
    assert 24.0 < s["fps"] < 25.1 and s["max_interval_ms"] > 79 and 39 < s["p50_interval_ms"] < 41
    assert window_stats(t, 10.0, 11.0)["fps"] == 0.0


def test_concurrency_benchmark_runs(tmp_path: Path) -> None:
    from benchmarks.bench_concurrency import main

    out, png = tmp_path / "concurrency.json", tmp_path / "concurrency.png"
    assert main(["--sessions", "1,2", "--seconds", "3", "--warmup", "1", "--json", str(out), "--plot", str(png),
                 "--no-progress"]) == 0
    r = json.loads(out.read_text())
    assert r["benchmark"] == "concurrency" and r["machine"]["cores"] >= 1
    assert r["engine"] == "onnxruntime" and r["model"]
    assert r["settings"]["sessions"] == [1, 2] and r["settings"]["schedulers"] == ["batched", "naive"]
    assert "same" in r["settings"]["clients"].lower()
    assert png.stat().st_size > 10_000
    assert {(x["scheduler"], x["n"]) for x in r["runs"]} == {("batched", 1), ("naive", 1), ("batched", 2), ("naive", 2)}
    for run in r["runs"]:
        assert run.get("error") is None, run.get("error")
        assert len(run["sessions"]) == run["n"]
        for s in run["sessions"]:
            assert s["fps"] > 0 and s["frames_received"] > 10 and s["frames_sent"] > 10
            assert s["p99_interval_ms"] > 0 and s["offer_to_first_frame_s"] > 0
        sm = run["summary"]
        assert 0 < sm["min_fresh_fps"] <= sm["min_fps"] + 1.0
        assert sm["server_cpu_pct"] > 0 and sm["server_rss_mb"] > 50 and sm["server_cpu_ms_per_frame_sent"] > 0
        assert sm["audio_to_frame_ms"]["n"] > 0 and sm["audio_to_frame_ms"]["p50"] > 0
        assert sm["batch_size_mean"] >= 1.0
        if run["scheduler"] == "naive":
            assert sm["batch_size_mean"] == 1.0  # one engine call per session per frame
    for sched in ("batched", "naive"):
        assert r["summary"][sched]["max_sessions"] in (0, 1, 2)
        assert set(r["summary"][sched]["server_cpu_ms_per_frame"]) == {"1", "2"}
    assert "batched_over_naive_max_sessions" in r["summary"]
    assert set(r["max_sessions"]) == {"batched", "naive"}  # the headline lipstream bench reads


def test_cold_start_benchmark_runs(tmp_path: Path) -> None:
    from benchmarks.bench_cold_start import main

    out, png = tmp_path / "cold.json", tmp_path / "cold.png"
    assert main(["--repeats", "1", "--json", str(out), "--plot", str(png), "--no-progress"]) == 0
    r = json.loads(out.read_text())
    assert r["benchmark"] == "cold_start" and r["engine"] == "onnxruntime"
    assert png.stat().st_size > 5_000
    assert r["server_start"]["n"] == 1 and r["server_start"]["p50_ms"] > 100
    for case in ("warm", "fresh_avatar"):
        assert r[case]["first_frame"]["n"] == 1
        for phase in ("offer_to_answer", "answer_to_connected", "connected_to_first_frame", "first_frame"):
            assert r[case][phase]["min_ms"] > 0, (case, phase)
        assert r[case]["first_frame"]["p50_ms"] < 10_000
    assert r["first_session"]["first_frame"] > 0
    assert r["raw"]["fresh_avatar"][0]["avatar"] == "cold-0"
