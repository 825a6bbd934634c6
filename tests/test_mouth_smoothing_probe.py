"""The smoothing probe's two primitives (benchmarks.mouth_smoothing_probe): fast, no model."""

import numpy as np

from benchmarks.mouth_smoothing_probe import ema, movement


def test_ema_smooths_open_and_width_only_and_matches_the_closed_form() -> None:
    x = np.zeros((12, 3), np.float32)
    x[2:, :] = 1.0  # a step on all three parameters at frame 2
    y = ema(x, 0.5)
    k = np.arange(12)
    want = np.where(k >= 2, 1 - 0.5 ** (k - 1), 0.0)  # step response of y = a x + (1 - a) y_prev
    np.testing.assert_allclose(y[:, 0], want, atol=1e-6)
    np.testing.assert_allclose(y[:, 1], want, atol=1e-6)
    np.testing.assert_array_equal(y[:, 2], x[:, 2])  # closure is left raw: a p/b/m press keeps its depth
    np.testing.assert_array_equal(ema(x, 1.0), x)  # a = 1 is today's output


def test_movement_counts_flicker_not_slow_motion() -> None:
    slow = np.linspace(0, 1, 25)
    flicker = np.tile([0.3, 0.5], 12)
    assert movement(slow)["reversals"] == 0
    assert movement(flicker)["reversals"] == 22
    assert movement(flicker)["mean_abs_step"] > movement(slow)["mean_abs_step"]
    assert movement(np.tile([0.3, 0.31], 12))["reversals"] == 0  # steps under REVERSAL_STEP are not moves
