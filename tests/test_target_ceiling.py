"""benchmarks.target_ceiling: scores target shapes against filmed mouths stored in a result file."""

import json

import numpy as np

from benchmarks import target_ceiling
from export.phonemes import Segments, effective_open, target_track


def _result(tmp_path, shape):
    seg = [[0.0, 0.3, "sil"], [0.3, 0.4, "b"], [0.4, 0.6, "aa"], [0.6, 0.7, "t"], [0.7, 0.9, "iy"],
           [0.9, 1.0, "m"], [1.0, 1.2, "ae"], [1.2, 1.6, "sil"]]
    s = Segments(np.array([x[0] for x in seg]), np.array([x[1] for x in seg]), [x[2] for x in seg], "cmu")
    real = effective_open(target_track(s, np.arange(40) / 25.0, **shape)) * 0.03 + 0.01  # another scale
    p = tmp_path / "rse.json"
    p.write_text(json.dumps({"clips": {"c": {"segments": seg, "tracks": {"real": real.tolist()}}},
                             "mean": {"model": {"corr": 0.5, "corr_speech": 0.4}}}))
    return p


def test_the_shape_a_mouth_was_made_from_scores_best(tmp_path):
    shape = {"anticipation_s": 0.12, "carryover_s": 0.08, "jaw_coupling": 1.0}
    out = tmp_path / "o.json"
    assert target_ceiling.main(["--from", str(_result(tmp_path, shape)), "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["shapes"]
    assert len(rows) == len(target_ceiling.JAW) * len(target_ceiling.SMOOTHING)
    best = max(rows, key=lambda r: r["corr"])
    assert best["shape"] == shape and best["corr"] > 0.999
    assert min(r["corr"] for r in rows) < 0.99  # the grid's shapes differ on this clip


def test_a_result_without_alignment_is_refused_with_the_fix(tmp_path, capsys):
    p = tmp_path / "rse.json"
    p.write_text(json.dumps({"clips": {"c": {"tracks": {"real": [0.1, 0.2]}}}}))
    assert target_ceiling.main(["--from", str(p)]) == 2
    assert "pocketsphinx" in capsys.readouterr().err
