"""benchmarks.lookahead_stage: the latency a model's lookahead costs, through the server's own timeline."""

import pytest

from benchmarks.lookahead_stage import lookahead_stage


def test_the_stage_shrinks_by_exactly_the_lookahead_saved() -> None:
    st = {ms: lookahead_stage(ms / 1000, seconds=4.0) for ms in (40, 20, 0)}
    for ms in (40, 20):
        assert st[ms]["p50_ms"] - st[0]["p50_ms"] == pytest.approx(ms, abs=0.01)
        assert st[ms]["mean_ms"] - st[0]["mean_ms"] == pytest.approx(ms, abs=0.5)
    for ms, s in st.items():
        # the window must reach past the frame's instant by the lookahead, plus the STFT's right half
        assert s["p50_ms"] >= ms + 12.5
        assert s["min_ms"] >= 0.0
