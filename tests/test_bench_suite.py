"""``lipstream bench --quick`` end to end with tiny durations: every part runs and writes its
JSON, PNG and the summary.  Figures are not asserted (a busy CI machine decides them); that each
part produced the numbers the summary quotes is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("matplotlib", reason="needs the [bench] extra (matplotlib)")
pytest.importorskip("psutil", reason="needs the [bench] extra (psutil)")

PARTS = {"stages", "engine", "server_latency", "glass", "concurrency", "cold_start"}
BROWSER = Path("/usr/bin/chromium").is_file()


def test_quick_suite_writes_every_part_and_a_summary(tmp_path: Path) -> None:
    from realtime.cli import main

    rc = main(["bench", "--quick", "--duration-scale", "0.2", "--out", str(tmp_path)])
    summary = json.loads((tmp_path / "summary.json").read_text())
    parts = {p["part"]: p for p in summary["parts"]}
    assert set(parts) == PARTS
    for name, part in parts.items():
        if name == "glass" and not BROWSER:
            assert "skipped" in part
            continue
        assert "json" in part, part
        assert json.loads((tmp_path / f"{name}.json").read_text())["machine"]["cores"] >= 1
        assert (tmp_path / f"{name}.png").stat().st_size > 1000, name
    assert rc == (0 if BROWSER else 1)
    h = summary["headline"]
    assert h["server_latency_p50_ms"] > 0 and h["engine_batch1_p50_ms"] > 0 and h["render_speed_x"] > 0
    assert set(h["server_stages_p50_ms"]) >= {"lookahead", "inference", "encode"}
    assert h["cold_start_warm_p50_ms"] > 0 and h["cold_start_fresh_avatar_p50_ms"] > 0
    assert set(h["sessions_at_25fps"]) == {"batched", "naive"}
    if BROWSER:
        assert h["glass_p50_ms"] is not None and h["glass_fps"] > 10
    md = (tmp_path / "summary.md").read_text()
    assert "glass-to-glass" in md and summary["command"] in md
