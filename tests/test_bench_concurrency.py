"""The concurrency and cold-start benchmarks run end to end with tiny settings.

The end-to-end runs check the structure of what they write, basic sanity (frames flowed, times
are positive) and that the verdicts agree with the figures, not the figures themselves: those
depend on the machine and its load.  About a minute on 2 cores.  The verdicts (does N hold, the
largest N that holds, when a sweep stops or measures again) are tested on constructed inputs.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import namedtuple
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


_CpuTimes = namedtuple("_CpuTimes", "user system idle iowait")  # the fields _machine_busy reads


def _snap(t: float, sent: int, repeated: int, server_cpu_s: float, sids: list[str]) -> dict:
    """A measurement-window snapshot as bench_concurrency._snapshot returns it."""
    metrics = {
        "lipstream_frames_sent_total": float(sent), "lipstream_frames_dropped_total": float(repeated),
        "lipstream_frames_skipped_total": 0.0, "lipstream_ticks_busy_total": 0.0,
        'lipstream_audio_to_frame_seconds_bucket{le="0.1"}': 0.0 if t == 0 else 30.0,
        'lipstream_audio_to_frame_seconds_bucket{le="0.2"}': 0.0 if t == 0 else 40.0,
        'lipstream_audio_to_frame_seconds_bucket{le="+Inf"}': 0.0 if t == 0 else 40.0,
        "lipstream_audio_to_frame_seconds_count": 0.0 if t == 0 else 40.0,
        "lipstream_audio_to_frame_seconds_sum": 0.0 if t == 0 else 4.0,
        "lipstream_inference_seconds_count": float(sent), "lipstream_inference_seconds_sum": sent * 0.002,
        "lipstream_batch_size_count": float(sent) / 2, "lipstream_batch_size_sum": float(sent),
        'lipstream_engine_info{engine="onnxruntime",model="m1"}': 1.0,
    }
    per = {"frames_sent": sent // len(sids), "frames_repeated": repeated // len(sids), "frames_skipped": 0,
           "frames_rendered": (sent - repeated) // len(sids), "audio_to_frame_ms": 100.0}
    return {"t": t, "metrics": metrics, "sessions": {s: dict(per) for s in sids}, "server_cpu_s": server_cpu_s,
            "clients_cpu_s": server_cpu_s / 2, "self_cpu_s": 0.0,
            "machine": _CpuTimes(10 * t, 0.0, 100.0 * t, 0.0)}


def _figures_for(fps: list[float], p99: list[float | None]) -> dict:
    from benchmarks.bench_concurrency import _figures

    sids = [f"s{i}" for i in range(len(fps))]
    a, b = _snap(0.0, 0, 0, 1.0, sids), _snap(10.0, 500, 50, 3.0, sids)
    results = [{"session_id": s, "fps": f, "frames": int(f * 10), "p50_interval_ms": 40.0, "p99_interval_ms": q,
                "max_interval_ms": 80.0, "audio_frames": 500} for s, f, q in zip(sids, fps, p99)]
    streaming = [{"session_id": s, "first_frame_s": 0.5} for s in sids]
    return _figures("batched", len(fps), 10.0, a, b, streaming, results, [200 * 2**20, 210 * 2**20], 1.0, 0.4)


def test_a_run_holds_only_when_every_session_meets_both_limits() -> None:
    from benchmarks.bench_concurrency import MAX_P99_INTERVAL_MS, MIN_FPS

    assert (MIN_FPS, MAX_P99_INTERVAL_MS) == (24.5, 60.0)  # the criterion the docs state
    ok = _figures_for([25.0, 24.6], [45.0, 59.0])
    assert ok["holds"] and ok["fps_ok"]
    slow = _figures_for([25.0, 24.4], [45.0, 50.0])  # one session short of the fps limit
    assert not slow["holds"] and not slow["fps_ok"]
    jittery = _figures_for([25.0, 25.0], [45.0, 61.0])  # fps fine, one p99 interval too long
    assert not jittery["holds"] and jittery["fps_ok"]
    unknown = _figures_for([25.0, 25.0], [45.0, None])  # no interval measured: not a pass
    assert not unknown["holds"]
    # the figures follow from the two snapshots
    s = ok["summary"]
    assert s["min_fps"] == 24.6 and s["max_p99_interval_ms"] == 59.0
    assert s["frames_sent"] == 500 and s["repeated_pct"] == 10.0
    assert s["min_fresh_fps"] == (250 - 25) / 10.0  # per session: (sent - repeated) / window
    assert s["server_cpu_pct"] == 20.0 and s["server_cpu_ms_per_frame_sent"] == 4.0
    assert s["audio_to_frame_ms"]["mean"] == 100.0 and s["audio_to_frame_ms"]["n"] == 40
    assert math.isclose(s["audio_to_frame_ms"]["p50"], 66.6666, rel_tol=1e-4)  # inside the first bucket
    assert s["batch_size_mean"] == 2.0 and s["inference_ms_mean"] == 2.0 and s["server_rss_mb"] == 210.0
    assert (ok["engine"], ok["model"]) == ("onnxruntime", "m1")


def _run(sched: str, n: int, holds: bool, fps_ok: bool | None = None, others: float = 0.0) -> dict:
    fps_ok = holds if fps_ok is None else fps_ok
    return {"scheduler": sched, "n": n, "holds": holds, "fps_ok": fps_ok,
            "summary": {"min_fps": 25.0 if fps_ok else 20.0, "max_p99_interval_ms": 50.0 if holds else 90.0,
                        "server_cpu_ms_per_frame_sent": 2.0 * n if sched == "batched" else 3.0 * n,
                        "server_cpu_pct": 10.0 * n, "others_cpu_pct": others}}


def test_max_sessions_is_the_largest_n_with_every_smaller_n_holding() -> None:
    from benchmarks.bench_concurrency import _summaries

    runs = [_run("batched", 1, True), _run("batched", 2, True), _run("batched", 4, False), _run("batched", 8, True),
            _run("naive", 1, True), _run("naive", 2, False), _run("naive", 4, False)]
    sm = _summaries(runs, [1, 2, 4, 8], ["batched", "naive"], {"batched": None, "naive": 4})
    assert sm["batched"]["max_sessions"] == 2  # N=8 held, but N=4 did not
    assert sm["batched"]["largest_n_holding"] == 8
    assert sm["naive"]["max_sessions"] == 1 and sm["naive"]["stopped_early_after_n"] == 4
    assert sm["batched"]["holds"] == {"1": True, "2": True, "4": False, "8": True}
    assert sm["batched_over_naive_max_sessions"] == 2.0
    assert sm["naive_over_batched_cpu_per_frame"] == {"1": 1.5, "2": 1.5, "4": 1.5}
    none_held = _summaries([_run("batched", 1, False), _run("naive", 1, True)], [1], ["batched", "naive"],
                           {"batched": None, "naive": None})
    assert none_held["batched"]["max_sessions"] == 0 and none_held["naive"]["max_sessions"] == 1
    assert none_held["batched_over_naive_max_sessions"] == 0.0
    naive_none = _summaries([_run("batched", 1, True), _run("naive", 1, False)], [1], ["batched", "naive"],
                            {"batched": None, "naive": None})
    assert naive_none["batched_over_naive_max_sessions"] is None


def test_sweep_stops_after_two_fps_misses_and_measures_a_disturbed_miss_again(monkeypatch) -> None:
    import benchmarks.bench_concurrency as bc

    # batched: N=4 misses only while the machine is busy with other work (then holds when measured
    # again); N=16 and N=32 miss fps.  naive: N=2 misses the p99 limit only (not an fps miss),
    # N=4 and N=8 miss fps, so N=16 and N=32 are never run.
    plan = {("batched", 4): [_run("batched", 4, False, others=80.0), _run("batched", 4, True)],
            ("batched", 16): [_run("batched", 16, False)], ("batched", 32): [_run("batched", 32, False)],
            ("naive", 2): [_run("naive", 2, False, fps_ok=True)],
            ("naive", 4): [_run("naive", 4, False)], ("naive", 8): [_run("naive", 8, False)],
            ("naive", 16): [_run("naive", 16, False)]}
    calls: list[tuple[str, int]] = []

    async def attempt(sched, n, *_args):  # noqa: ANN001, ANN202
        calls.append((sched, n))
        todo = plan.get((sched, n))
        return todo.pop(0) if todo else _run(sched, n, True)

    monkeypatch.setattr(bc, "_attempt", attempt)
    sessions = [1, 2, 4, 8, 16, 32, 64]
    runs, stopped = asyncio.run(bc._sweep(sessions, 1.0, ["batched", "naive"], 0.0, "vp8", "auto", False, 25.0))
    assert calls[:4] == [("batched", 1), ("naive", 1), ("batched", 2), ("naive", 2)]  # interleaved
    assert calls.count(("batched", 4)) == 2  # the disturbed miss was measured again, once
    assert ("naive", 16) not in calls and ("naive", 8) in calls
    assert stopped == {"batched": 32, "naive": 8}
    assert ("batched", 64) not in calls
    kept = next(r for r in runs if (r["scheduler"], r["n"]) == ("batched", 4))
    assert kept["holds"] and kept["discarded_attempt"]["others_cpu_pct"] == 80.0
    measured = list(calls)
    measured.remove(("batched", 4))  # the first attempt is not a run of its own
    assert [(r["scheduler"], r["n"]) for r in runs] == measured
    # a miss on a quiet machine is not measured again
    calls.clear()
    plan[("batched", 1)] = [_run("batched", 1, False, others=5.0)]
    asyncio.run(bc._sweep([1], 1.0, ["batched"], 0.0, "vp8", "auto", False, 25.0))
    assert calls == [("batched", 1)]


def test_concurrency_benchmark_runs(tmp_path: Path) -> None:
    from benchmarks.bench_concurrency import MAX_P99_INTERVAL_MS, MIN_FPS, main

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
        # the verdict is the stated criterion applied to the figures just checked
        assert run["fps_ok"] == (sm["min_fps"] >= MIN_FPS)
        assert run["holds"] == (run["fps_ok"] and sm["max_p99_interval_ms"] <= MAX_P99_INTERVAL_MS)
    # one session on the batched loop keeps its 25 fps target even with its client on the same
    # cores (measured 25.0-25.3 fps over 3 s windows on the 2-core build machine)
    one = next(x for x in r["runs"] if (x["scheduler"], x["n"]) == ("batched", 1))
    assert one["fps_ok"], one["summary"]
    for sched in ("batched", "naive"):
        mine = sorted((x for x in r["runs"] if x["scheduler"] == sched), key=lambda x: x["n"])
        held = [x["n"] for x in mine if x["holds"]]
        expect = 2 if held == [1, 2] else 1 if held[:1] == [1] else 0
        assert r["summary"][sched]["max_sessions"] == expect == r["max_sessions"][sched]
        assert r["summary"][sched]["holds"] == {str(x["n"]): x["holds"] for x in mine}
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
