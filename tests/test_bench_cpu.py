"""The CPU benchmarks' methods: encoder quality figures that mean what they say, thread grouping."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import bench_cpu_split, bench_encoders


def test_encoder_bench_measures_real_encodes_of_the_servers_frames(tmp_path: Path) -> None:
    out = tmp_path / "encoders.json"
    assert bench_encoders.main(["--seconds", "2", "--repeats", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    for name, row in result["vp8"].items():
        assert row["frames"] == 50 and row["ms_per_frame"] > 0
        assert 300 < row["kbit_s"] < 700, (name, row)  # CBR at 500 kbit/s: the rate control ran
        assert 30 < row["luma_psnr_db"] < 60, (name, row)  # decoded frames compared with their sources
    opus = result["opus"]["aiortc (96 kbit/s, complexity 10)"]
    assert opus["packets"] == 100 and 80 < opus["kbit_s"] < 130
    assert opus["snr_db"] > 15  # the codec's delay was found: misaligned speech scores ~0 dB


def test_cpu_split_groups_threads_of_one_kind_and_reads_py_spy_names() -> None:
    assert bench_cpu_split._group("uvloop_3") == "uvloop_*"
    assert bench_cpu_split._group("lipstream-render-1") == "lipstream-render-*"
    assert bench_cpu_split._group("audio-decoder") == "audio-decoder"
    line = 'Thread 4242 (idle): "lipstream-render-1"'
    m = bench_cpu_split._SPY_LINE.match(line)
    assert m is not None and m.group(1) == "4242" and m.group(2) == "lipstream-render-1"
    assert bench_cpu_split._SPY_LINE.match('Thread 0x7F2A (active): "MainThread"').group(1) == "0x7F2A"
