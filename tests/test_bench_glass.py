"""The glass-to-glass benchmark runs end to end in real headless Chromium (a 6 s window, ~17 s).

Figures are not asserted beyond sanity (the machine is shared): the result has its keys, at
least one burst was measured, the page presented > 20 fps, and the plot was written.  Those are
skipped without Debian ``chromium`` or ``playwright``; the pure helpers are tested anyway.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmarks.bench_glass import clean_bursts, frame_rate_and_freezes

NO_BROWSER = (
    "needs the playwright package (pip install 'lipstream[bench]')" if importlib.util.find_spec("playwright") is None
    else "needs Debian chromium at /usr/bin/chromium (apt-get install chromium)"
    if not Path("/usr/bin/chromium").is_file() and not shutil.which("chromium") else None)


def test_bursts_start_on_loud_speech() -> None:
    """A burst that begins with a pause is trimmed to its first loud 60 ms; a silent one dropped."""
    x = np.zeros(16000 * 6, np.float32)
    x[16000:16000 + 3200] = 0.005  # 200 ms of breath
    x[16000 + 3200:16000 + 12800] = 0.2  # then speech
    out, starts = clean_bursts(x, [1.0, 4.0])
    assert starts == [pytest.approx(1.2)]
    assert not out[16000:16000 + 3200].any() and out[16000 + 3200] == pytest.approx(0.2)


def test_freezes_count_gaps_not_missed_callbacks() -> None:
    t = np.arange(0, 2000, 40.0)
    presented = np.arange(t.size, dtype=np.float64)
    keep = np.ones(t.size, bool)
    keep[10:12] = False  # two callbacks missed: frames presented, no freeze
    t[30:] += 200  # a 240 ms gap with nothing presented: a freeze
    frames = {"expected_display": t[keep], "presented_frames": presented[keep]}
    fps, freezes = frame_rate_and_freezes(frames, 0, 10_000)
    assert freezes["count"] == 1 and freezes["missed_callbacks"] == 2
    assert freezes["longest_ms"] == pytest.approx(240)
    assert 22 < fps["presented"] < 25


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    if NO_BROWSER:
        pytest.skip(NO_BROWSER)
    from benchmarks.bench_glass import main

    out = tmp_path_factory.mktemp("glass")
    # --warmup 1: a call's first seconds (the default 20 s waits for Chromium's A/V sync to settle)
    rc = main(["--seconds", "6", "--warmup", "1", "--json", str(out / "glass.json"), "--plot", str(out / "glass.png")])
    assert rc == 0
    assert (out / "glass.png").is_file() and (out / "glass.png").stat().st_size > 10_000
    return json.loads((out / "glass.json").read_text())


def test_result_layout(result: dict) -> None:
    assert result["benchmark"] == "glass_to_glass"
    for key in ("machine", "engine", "model", "settings", "glass_to_glass", "av_skew", "av_skew_at_speaker", "fps", "freezes",
                "webrtc_stats", "bursts", "raw", "server_session"):
        assert key in result, key
    assert result["settings"]["codec"] == "vp8" and result["model"]["lookahead_s"] is not None
    for key in ("n", "p50_ms", "p95_ms", "min_ms", "max_ms", "raw_ms"):
        assert key in result["glass_to_glass"], key
    assert len(result["raw"]["frames"]["t_ms"]) > 100


def test_bursts_measured(result: dict) -> None:
    assert result["bursts_measured"] >= 1, result["bursts"]
    g = result["glass_to_glass"]
    assert 20 < g["p50_ms"] < 1000, g  # sanity only: lips follow the mic, within a second
    assert result["server_session"]["mic_s"] > 3 and result["server_session"]["max_opening"] > 0.2


def test_video_flowed(result: dict) -> None:
    assert result["fps"]["presented"] > 20, result["fps"]
    assert result["webrtc_stats"]["video"]["frames_decoded"] > 100
    assert np.isfinite(result["webrtc_stats"]["video"]["jitter_buffer_ms"])
