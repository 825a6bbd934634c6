"""The engine's avatar feature tables as avatars come and go (``add_avatar`` / ``remove_avatar``).

CPU only: ONNX Runtime FP32 on the built-in model.  Synthetic avatars reuse the built-in avatar's
features (tiled to N frames, each frame's reference image dimmed differently), so no test runs the
preparation; the device backends share the same bookkeeping and re-upload through
``_tables_changed`` (tests/test_engines.py checks the torch one).
"""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def ort_engine():
    """A fresh engine per test: each starts from empty tables."""
    from engines.onnxruntime_engine import OnnxRuntimeEngine

    return OnnxRuntimeEngine()


def make_features(avatar, n: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` frames from the built-in avatar's (one-frame) features; the reference image of each
    frame is scaled by its own factor, so every row renders differently."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, v in avatar.features.items():
        tiled = np.repeat(v[:1], n, axis=0).astype(np.float32)
        if k == "ref":
            tiled *= rng.uniform(0.3, 1.0, n).astype(np.float32).reshape(-1, *([1] * (v.ndim - 1)))
        out[k] = tiled
    return out


def batch(engine, rows: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    b = len(rows)
    mel = rng.uniform(-4, 2, (b, 1, *engine.manifest.window)).astype(np.float32)
    gate = np.ones(b, np.float32)
    return mel, np.asarray(rows, np.int64), gate


def check_tables(engine) -> None:
    """Every table has ``table_rows`` rows, live blocks do not overlap, holes lie between them."""
    n = engine.table_rows
    assert all(t.shape[0] == n for t in engine.tables.values())
    assert bool(engine.tables) == (n > 0)
    used = np.zeros(n, bool)
    for a in engine.avatars:
        r = engine.avatar_rows(a)
        assert np.array_equal(r, np.arange(r[0], r[0] + len(r)))  # one contiguous block
        assert not used[r].any()
        used[r] = True
    for start, length in engine._free:
        assert not used[start:start + length].any() and start + length < n
    assert used.sum() + sum(length for _, length in engine._free) == n
    if n:
        assert used[-1]  # the last row is always live: freeing the last block truncates


def test_precision_is_an_engine_attribute(ort_engine):
    from engines.base import Engine

    assert "precision" in Engine.__annotations__
    assert ort_engine.precision == "fp32"
    with pytest.raises(ValueError, match="fp32, fp16"):
        type(ort_engine)(precision="int8")


def test_churn_keeps_tables_bounded(ort_engine, avatar):
    """Hundreds of avatars of 1..40 frames come and go, at most 6 live: the tables stay near the
    peak live total instead of growing with every avatar ever added."""
    eng = ort_engine
    rng = np.random.default_rng(3)
    live: dict[str, np.ndarray] = {}
    peak_live = peak_rows = total_added = 0
    for i in range(300):
        if live and (len(live) >= 6 or rng.random() < 0.45):
            victim = sorted(live)[int(rng.integers(len(live)))]
            eng.remove_avatar(victim)
            del live[victim]
        else:
            n = int(rng.integers(1, 41))
            aid = f"churn-{i}"
            rows = eng.add_avatar(aid, make_features(avatar, n, seed=i))
            assert len(rows) == n
            live[aid] = rows.copy()
            total_added += n
        # avatars that stay keep their rows
        assert all(np.array_equal(eng.avatar_rows(a), r) for a, r in live.items())
        check_tables(eng)
        live_total = sum(len(r) for r in live.values())
        peak_live = max(peak_live, live_total)
        peak_rows = max(peak_rows, eng.table_rows)
        assert eng.table_rows >= live_total
    # First fit without moving anyone's rows can leave holes: the tables are bounded by a small
    # multiple of the peak live total (this sequence: 218 rows at a peak of 192 live, of 3054 added),
    # not by everything ever added.
    assert peak_rows <= 2 * peak_live, (peak_rows, peak_live)
    assert total_added > 10 * peak_rows, (total_added, peak_rows)
    for a in list(live):
        eng.remove_avatar(a)
    assert eng.table_rows == 0 and eng.tables == {} and eng._free == []


def test_first_fit_reuses_holes_and_truncates(ort_engine, avatar):
    eng = ort_engine
    assert eng.table_rows == 0
    a = eng.add_avatar("a", make_features(avatar, 10, 1))
    b = eng.add_avatar("b", make_features(avatar, 5, 2))
    c = eng.add_avatar("c", make_features(avatar, 8, 3))
    assert (a[0], b[0], c[0], eng.table_rows) == (0, 10, 15, 23)
    eng.remove_avatar("a")
    eng.remove_avatar("b")  # merges with a's hole: rows 0..14 free
    assert eng._free == [(0, 15)] and eng.table_rows == 23
    d = eng.add_avatar("d", make_features(avatar, 12, 4))  # first fit: the front hole
    assert d[0] == 0 and eng._free == [(12, 3)] and eng.table_rows == 23
    e = eng.add_avatar("e", make_features(avatar, 4, 5))  # the 3-row hole is too small: appended
    assert e[0] == 23 and eng.table_rows == 27
    f = eng.add_avatar("f", make_features(avatar, 3, 6))  # fills the hole exactly
    assert f[0] == 12 and eng._free == [] and eng.table_rows == 27
    eng.remove_avatar("e")  # the last block: the tables shrink
    assert eng.table_rows == 23 and all(t.shape[0] == 23 for t in eng.tables.values())
    eng.remove_avatar("f")
    eng.remove_avatar("c")  # last block again, and the hole before it goes too
    assert eng.table_rows == 12 and eng._free == []
    eng.remove_avatar("d")
    assert eng.table_rows == 0 and eng.tables == {}
    check_tables(eng)


def test_kept_avatar_renders_the_same_while_others_come_and_go(ort_engine, avatar):
    """A live avatar's rows give the same frames before and after its neighbours are removed and
    their rows reused; a new avatar in a reused hole renders its own features."""
    from engines.onnxruntime_engine import OnnxRuntimeEngine

    eng = ort_engine
    eng.add_avatar("left", make_features(avatar, 7, 10))
    keep = eng.add_avatar("keep", make_features(avatar, 9, 11)).copy()
    eng.add_avatar("right", make_features(avatar, 6, 12))
    eng.add_avatar("tail", make_features(avatar, 3, 13))
    mel, rows, gate = batch(eng, keep, seed=1)
    before = eng.run(mel, rows, gate)

    eng.remove_avatar("left")
    eng.remove_avatar("right")
    new = eng.add_avatar("new", make_features(avatar, 5, 14))  # into left's hole
    assert new[0] == 0
    eng.remove_avatar("tail")
    eng.add_avatar("more", make_features(avatar, 6, 15))  # right's hole
    eng.add_avatar("big", make_features(avatar, 30, 16))  # appended
    check_tables(eng)

    assert np.array_equal(eng.avatar_rows("keep"), keep)
    after = eng.run(mel, rows, gate)
    np.testing.assert_array_equal(after.crops, before.crops)
    np.testing.assert_array_equal(after.params, before.params)

    # the avatar in the reused rows renders what an engine holding only it renders
    alone = OnnxRuntimeEngine()
    own = alone.add_avatar("new", make_features(avatar, 5, 14))
    mel5, _, gate5 = batch(eng, new, seed=2)
    got, ref = eng.run(mel5, new, gate5), alone.run(mel5, own, gate5)
    np.testing.assert_allclose(got.crops, ref.crops, atol=1e-6)
    np.testing.assert_allclose(got.params, ref.params, atol=1e-6)
    for a in eng.avatars:
        eng.remove_avatar(a)
    assert eng.table_rows == 0


def test_unknown_avatar_is_a_clear_key_error(ort_engine, avatar):
    eng = ort_engine
    eng.add_avatar("here", make_features(avatar, 2, 20))
    with pytest.raises(KeyError, match=r"no avatar 'ghost' in this engine to remove \(avatars: 'here'\)"):
        eng.remove_avatar("ghost")
    eng.remove_avatar("here")
    with pytest.raises(KeyError, match="no avatar 'here'"):
        eng.remove_avatar("here")  # twice
    with pytest.raises(KeyError, match="no avatar 'here'"):
        eng.avatar_rows("here")
    assert eng.table_rows == 0


def test_add_again_and_mismatched_features(ort_engine, avatar):
    eng = ort_engine
    rows = eng.add_avatar("x", make_features(avatar, 4, 30))
    assert eng.add_avatar("x", make_features(avatar, 9, 31)) is rows  # same id: same rows
    bad = make_features(avatar, 3, 32)
    bad["colors"] = np.zeros((3, 5, 3), np.float32)
    with pytest.raises(ValueError, match="'colors'"):
        eng.add_avatar("bad", bad)
    assert eng.table_rows == 4 and eng.avatars == ("x",)
    eng.remove_avatar("x")


def test_a_refused_upload_undoes_the_add(avatar):
    """A backend that refuses the new tables (TensorRT: more rows than its plan) leaves the engine
    as it was: no half-added avatar, the old tables uploaded again."""
    from engines.manifest import ModelArtifactError
    from engines.onnxruntime_engine import OnnxRuntimeEngine

    class Capped(OnnxRuntimeEngine):
        def _tables_changed(self) -> None:
            if self.table_rows > 10:
                raise ModelArtifactError("too many rows")
            super()._tables_changed()

    eng = Capped()
    a = eng.add_avatar("a", make_features(avatar, 6, 40))
    with pytest.raises(ModelArtifactError):
        eng.add_avatar("b", make_features(avatar, 6, 41))
    assert eng.avatars == ("a",) and eng.table_rows == 6
    assert all(t.shape[0] == 6 for t in eng._cast_tables.values())
    mel, rows, gate = batch(eng, a)
    assert eng.run(mel, rows, gate).crops.shape[0] == 6
