"""G4G training side: face crops and the landmark prior, data preparation, losses, the sync expert,
resumable training, the CPU smoke run on the GRID clips and its export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from export.g4g import faces
from export.landmarks import CHIN, LOWER_INNER, LOWER_OUTER, UPPER_INNER, UPPER_OUTER

ROOT = Path(__file__).resolve().parents[1]
GRID = ROOT / "tests" / "data" / "grid"


def _fake_landmarks(n: int, rng: np.random.Generator, hw=(288, 360)) -> np.ndarray:
    """A face-sized point cloud drifting across the frame (478 points, pixels)."""
    base = rng.uniform([130, 100], [230, 230], size=(478, 2))
    drift = np.linspace(0, 20, n)[:, None, None] * np.array([1.0, 0.5])
    return (base[None] + drift + rng.normal(0, 0.5, (n, 478, 2))).astype(np.float32)


def test_crop_boxes_are_square_steady_and_inside_the_frame():
    rng = np.random.default_rng(0)
    lms = _fake_landmarks(40, rng)
    boxes = faces.crop_boxes(lms, (288, 360))
    sides = boxes[:, 2] - boxes[:, 0]
    assert boxes.shape == (40, 4) and boxes.dtype == np.int32
    assert (sides == boxes[:, 3] - boxes[:, 1]).all() and len(set(sides.tolist())) == 1
    assert sides[0] >= 130 * faces.PAD - 2  # padded beyond the mesh's bounds
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 360).all() and (boxes[:, 3] <= 288).all()
    assert np.abs(np.diff(boxes[:, 0])).max() <= 2  # smoothed: no jumps between frames
    centre = lms.mean((0, 1))
    big = (lms - centre) * 3 + centre  # larger than the frame: capped, still inside
    b = faces.crop_boxes(big, (288, 360))
    assert (b[:, 2] - b[:, 0] <= 288).all() and (b[:, 2] <= 360).all()


def test_crops_landmarks_and_mask_agree():
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 255, (3, 288, 360, 3), dtype=np.uint8)
    lms = _fake_landmarks(3, rng)
    boxes = faces.crop_boxes(lms, (288, 360))
    crops = faces.crop_faces(frames, boxes, 64)
    assert crops.shape == (3, 3, 64, 64) and crops.dtype == np.float32
    assert 0.0 <= crops.min() and crops.max() <= 1.0
    cl = faces.crop_landmarks(lms, boxes, 64)
    inside = (cl >= 0) & (cl <= 64)
    assert inside.all()  # the crop holds the whole mesh
    x0, y0, x1, y1 = boxes[0]
    ratio = (lms[0, 5] - [x0, y0]) * 64 / (x1 - x0)
    np.testing.assert_allclose(cl[0, 5], ratio, atol=1e-3)
    masked = faces.mask_lower(crops, 0.5)
    assert (masked[..., 32:, :] == 0).all() and np.array_equal(masked[..., :32, :], crops[..., :32, :])
    assert crops[..., 32:, :].any()  # a copy: the input is untouched


def test_landmark_prior_does_not_leak_the_mouth_or_jaw():
    rng = np.random.default_rng(2)
    cl = rng.uniform(8, 56, (1, 478, 2)).astype(np.float32)
    prior = faces.landmark_prior(cl, 64)
    assert prior.shape == (1, 3, 64, 64) and prior.max() == pytest.approx(1.0, abs=0.01)
    assert all(prior[0, c].any() for c in range(3))
    mouth = set(UPPER_OUTER + LOWER_OUTER + UPPER_INNER + LOWER_INNER) | {CHIN}
    assert not mouth & faces.PRIOR_INDICES  # no lip or chin point is ever read
    moved = cl.copy()
    others = [i for i in range(478) if i not in faces.PRIOR_INDICES]
    moved[0, others] = rng.uniform(0, 64, (len(others), 2))  # open the mouth, drop the jaw, anything
    np.testing.assert_array_equal(faces.landmark_prior(moved, 64), prior)
    eye = cl.copy()
    eye[0, 159] += 6  # an eyelid moves: the prior does change
    assert not np.array_equal(faces.landmark_prior(eye, 64), prior)


def test_pick_references():
    rng = np.random.default_rng(3)
    for _ in range(20):
        refs = faces.pick_references(75, 5, rng, exclude=10)
        assert refs.shape == (5,) and 10 not in refs and len(set(refs.tolist())) == 5
        assert refs.min() >= 0 and refs.max() < 75
    spread = faces.pick_references(75, 5)
    assert np.array_equal(spread, faces.pick_references(75, 5)) and len(set(spread.tolist())) == 5
    assert spread.min() > 0 and spread.max() < 74 and (np.diff(spread) > 10).all()
    assert faces.pick_references(1, 5).tolist() == [0] * 5  # a still image
    assert len(faces.pick_references(3, 5, rng, exclude=0)) == 5  # too few: repeats allowed


# --- data preparation, losses, the sync expert, training (torch) ---------------------------------

torch = pytest.importorskip("torch", reason="G4G training needs torch (the [export] extra)")

from export.g4g import data as gdata  # noqa: E402
from export.g4g import losses as L  # noqa: E402
from export.g4g.config import preset  # noqa: E402

TINY = preset("tiny")
SMOKE_STEPS = 40


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """The four GRID clips prepared once for every test here (a second call must hit the cache)."""
    d = tmp_path_factory.mktemp("g4g-cache")
    calls = []
    clips = gdata.prepare_dataset(GRID, TINY.size, d, progress=lambda i, n: calls.append((i, n)))
    assert calls[-1] == (4, 4)
    return d, clips


def test_data_preparation_and_cache(cache, tmp_path):
    d, clips = cache
    assert len(clips) == 4 and {c.speaker for c in clips} == {"brbk7n", "lbax4n", "lrwp9a", "sbia1a"}
    c = clips[0]
    assert c.faces.shape == (75, 3, 64, 64) and c.faces.dtype == np.uint8
    assert c.prior.shape == (75, 3, 64, 64) and c.windows.shape == (75, 1, 80, 16)
    assert c.windows.min() >= -4 and c.windows.max() <= 4 and c.windows.std() > 0.5
    lips = c.crop_lms[:, list(UPPER_OUTER + LOWER_OUTER), 1]
    assert lips.min() > TINY.mask_row  # the mouth lies entirely in the masked lower half
    files = sorted(d.glob("*.npz"))
    stamps = [f.stat().st_mtime_ns for f in files]
    again = gdata.prepare_dataset(GRID, TINY.size, d)
    assert [f.stat().st_mtime_ns for f in sorted(d.glob("*.npz"))] == stamps  # re-used, not rewritten
    np.testing.assert_array_equal(again[0].faces, c.faces)
    train, val, how = gdata.split_by_speaker(clips)
    assert [clips[i].speaker for i, _, _ in val] == ["sbia1a"] and len(train) == 3 and "speaker" in how
    one = [gdata.ClipData(x.name, "same", x.faces, x.prior, x.windows, x.crop_lms, x.wav) for x in clips[:2]]
    tr, va, how = gdata.split_by_speaker(one)  # one speaker: a time split, never overlapping
    assert all(t[2] <= v[1] - gdata.WINDOW for t, v in zip(tr, va)) and "time split" in how
    ds = gdata.G4GDataset(clips, val, TINY.n_refs, TINY.mask_from, random_refs=False)
    item = ds[3]
    assert item["source"].shape == (5, 3, 64, 64) and item["refs"].shape == (5, 15, 64, 64)
    assert (item["source"][:, :, 32:] == 0).all() and item["target"][:, :, 32:].any()
    np.testing.assert_array_equal(ds[3]["refs"], item["refs"])  # validation references are fixed
    assert gdata.speaker_of(tmp_path / "anna" / "x.mp4", tmp_path) == "anna"
    assert gdata.speaker_of(tmp_path / "bob_take2.mp4", tmp_path) == "bob"


def test_unusable_videos_are_clear_errors(tmp_path):
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    with pytest.raises(gdata.DataError, match="cannot read .*broken.mp4"):
        gdata.prepare_dataset(tmp_path, 64, tmp_path / "c")
    (tmp_path / "empty").mkdir()
    with pytest.raises(gdata.DataError, match="no videos"):
        gdata.prepare_dataset(tmp_path / "empty", 64, tmp_path / "c2")
    frames = np.full((8, 120, 160, 3), 128, np.uint8)  # a grey video: no face
    with pytest.raises(gdata.DataError, match="face was found in only 0 of 8"):
        gdata.detect_faces(frames, Path("grey.mp4"))


def _grad_ok(loss, params) -> bool:
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return any(g is not None and g.abs().sum() > 0 for g in grads)


def test_each_loss_has_a_shape_and_a_gradient():
    from export.g4g.model import G4G
    from export.g4g.syncnet import SyncExpert

    torch.manual_seed(0)
    model = G4G(TINY)
    a = torch.rand(10, 3, 64, 64, requires_grad=True)
    b = torch.rand(10, 3, 64, 64)
    assert L.Perceptual(None).kind == "ssim-2scale"
    for loss in (L.Perceptual(None)(a, b), L.attribute_loss(model, a, b),
                 L.masked_l1(a, a * 0.5, b, [torch.rand(10, 1, s, s) for s in (16, 32, 64)])):
        assert loss.ndim == 0 and loss.item() > 0 and _grad_ok(loss, [a])
    assert L.Perceptual(None)(b, b).item() == pytest.approx(0, abs=1e-5)
    df, dw = L.FrameDiscriminator(16), L.WindowDiscriminator(16)
    assert df(a).shape == (10, 1, 4, 4) and dw(a.view(2, 5, 3, 64, 64)).shape == (2, 1, 4, 4)
    g = L.lsgan_g(df(a)) + L.lsgan_g(dw(a.view(2, 5, 3, 64, 64)))
    assert _grad_ok(g, [a]) and _grad_ok(L.lsgan_d(df(b), df(a.detach())), list(df.parameters()))
    expert = SyncExpert(64).eval().requires_grad_(False)
    s = L.sync_loss(expert, a.view(2, 5, 3, 64, 64), torch.rand(2, 1, 80, 16) * 8 - 4)
    assert s.ndim == 0 and _grad_ok(s, [a])


def test_vgg19_perceptual_reads_a_torchvision_state_dict(tmp_path):
    net = L.vgg19_features()
    state = {f"features.{k}": v for k, v in net.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(1)  # the classifier is ignored
    torch.save(state, tmp_path / "vgg19.pth")
    per = L.Perceptual(tmp_path / "vgg19.pth")
    a, b = torch.rand(2, 3, 64, 64, requires_grad=True), torch.rand(2, 3, 64, 64)
    loss = per(a, b)
    assert per.kind == "vgg19" and loss.item() > 0 and _grad_ok(loss, [a])
    torch.save({"foo": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not a torchvision VGG-19"):
        L.Perceptual(tmp_path / "bad.pth")


def _args(parser_fn, *argv: str):
    import argparse

    p = argparse.ArgumentParser()
    parser_fn(p)
    return p.parse_args([str(a) for a in argv])


def test_sync_expert_trains_and_resumes(cache, tmp_path):
    from export.g4g.syncnet import load_expert
    from export.g4g.train_args import add_train_sync_arguments
    from export.g4g.train_sync import run_sync

    d, _ = cache
    base = (GRID, "--out", tmp_path / "sync", "--config", "tiny", "--cache", d, "--batch", 8, "--val-every", 10,
            "--threads", 1)
    first = run_sync(_args(add_train_sync_arguments, *base, "--steps", 10))
    assert first["step"] == 10 and 0.0 <= first["val_acc"] <= 1.0
    with pytest.raises(ValueError, match="--resume"):
        run_sync(_args(add_train_sync_arguments, *base, "--steps", 20))
    assert run_sync(_args(add_train_sync_arguments, *base, "--steps", 20, "--resume"))["step"] == 20
    expert = load_expert(tmp_path / "sync" / "checkpoint.pt")
    p = expert.sync_probability(torch.rand(3, 5, 3, 64, 64), torch.rand(3, 1, 80, 16))
    assert p.shape == (3,) and not expert.training
    steps = [r["step"] for r in _log(tmp_path / "sync") if "loss" in r]
    assert steps == sorted(steps) and steps[-1] == 20


def _log(run: Path) -> list[dict]:
    from export.g4g.checkpoints import read_log

    return read_log(run)


def test_training_resumes_where_it_stopped(cache, tmp_path):
    from export.g4g.train import run_train
    from export.g4g.train_args import add_train_arguments

    d, _ = cache
    base = (GRID, "--out", tmp_path / "run", "--config", "tiny", "--cache", d, "--batch", 1, "--val-every", 5,
            "--threads", 1)
    assert run_train(_args(add_train_arguments, *base, "--steps", 5))["step"] == 5
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ck["format"] == "lipstream-g4g" and ck["version"] == 1 and ck["step"] == 5
    assert ck["config"] == TINY.to_dict() and ck["train_info"]["lookahead_s"] == gdata.LOOKAHEAD_S
    assert {"generator", "d_frame", "d_window", "opt_g", "opt_d"} <= set(ck)
    with pytest.raises(ValueError, match="--resume"):
        run_train(_args(add_train_arguments, *base, "--steps", 10))
    out = run_train(_args(add_train_arguments, *base, "--steps", 10, "--resume"))
    ck2 = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert out["step"] == 10 and ck2["step"] == 10
    assert int(ck2["opt_g"]["state"][0]["step"]) == 10  # Adam's own count continued too
    changed = [k for k in ck["generator"] if not torch.equal(ck["generator"][k], ck2["generator"][k])]
    assert changed  # the resumed steps trained the same weights further
    assert [r["step"] for r in _log(tmp_path / "run") if "val_l1" in r] == [0, 5, 10]
    assert sorted(p.name for p in (tmp_path / "run" / "samples").glob("*.png")) == ["step_000005.png",
                                                                                   "step_000010.png"]


def _cli(*args, timeout: int = 600):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "realtime.cli", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def smoke_run(cache, tmp_path_factory):
    """`lipstream train tests/data/grid --config tiny` for SMOKE_STEPS steps on the CPU."""
    d, _ = cache
    run = tmp_path_factory.mktemp("g4g-smoke") / "run"
    out = _cli("train", GRID, "--out", run, "--config", "tiny", "--steps", SMOKE_STEPS, "--batch", 1,
               "--val-every", SMOKE_STEPS // 2, "--cache", d, "--threads", 1)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"checkpoint.pt at step {SMOKE_STEPS}" in out.stdout and "training [" in out.stderr
    return run


def test_cli_smoke_run_learns_on_the_grid_clips(smoke_run):
    log = _log(smoke_run)
    losses = {r["step"]: r["loss_avg10"] for r in log if "loss_avg10" in r}
    # the training loss falls (from a low start: the untrained G4G already copies; measured 0.271 ->
    # 0.248, most of what is left being the contrastive and GAN terms)
    assert losses[SMOKE_STEPS] < 0.95 * losses[10], losses
    val = {r["step"]: r for r in log if "val_mouth_l1" in r}
    assert set(val) == {0, SMOKE_STEPS // 2, SMOKE_STEPS}
    first, last = val[0], val[SMOKE_STEPS]
    # copy first: the untrained model's held-out mouth is the first reference's (the copy-reference
    # baseline), its upper face the source's, so its face already beats copy-reference
    assert abs(first["val_mouth_psnr"] - first["copy_ref_mouth_psnr"]) < 0.05, first
    assert first["val_psnr"] > first["copy_ref_psnr"], first
    # ... then amend: after the short run the held-out speaker's mouth beats copying a reference frame
    # (measured at 40 steps: 27.00 vs 26.53 dB, L1 0.0314 vs 0.0320) and the face still does
    assert last["val_mouth_psnr"] > last["copy_ref_mouth_psnr"] + 0.2, last
    assert last["val_mouth_l1"] < last["copy_ref_mouth_l1"], last
    assert last["val_psnr"] > last["copy_ref_psnr"] + 1.0, last


def test_bad_training_input_exits_2_naming_the_fix(tmp_path):
    out = _cli("train", tmp_path / "nowhere", "--out", tmp_path / "r", "--config", "tiny", timeout=120)
    assert out.returncode == 2 and "not a folder" in out.stderr and "Traceback" not in out.stderr
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "a.mp4").write_text("no video")
    out = _cli("train-sync", tmp_path / "v", "--out", tmp_path / "r", "--config", "tiny", timeout=120)
    assert out.returncode == 2 and "cannot read" in out.stderr and "Traceback" not in out.stderr


def test_help_of_the_training_commands_imports_no_torch():
    import subprocess
    import sys

    code = ("import contextlib, io, sys\nfrom realtime.cli import main\n"
            "for c in ('train', 'train-sync'):\n"
            "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "        main([c, '--help'])\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


def test_evaluate_the_smoke_run_against_copy_reference(smoke_run, cache, tmp_path):
    import json
    import subprocess
    import sys

    d, _ = cache
    out = subprocess.run([sys.executable, "-m", "export.g4g.evaluate", smoke_run / "checkpoint.pt", GRID, "--json",
                          tmp_path / "eval.json", "--cache", d], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads((tmp_path / "eval.json").read_text())
    assert res["step"] == SMOKE_STEPS and res["n_frames"] == 75 and list(res["per_clip"]) == ["sbia1a"]
    assert res["n_scored"] == 75 - 5  # the five reference frames are not scored against themselves
    model, copy = res["mean"]["model"], res["mean"]["copy_reference"]
    for figs in (model, copy):
        assert 5 < figs["psnr"] < 60 and 0 < figs["ssim"] <= 1 and 5 < figs["mouth_psnr"] < 60
    assert copy["mouth_open_mae"] is not None  # the face mesh read the copied reference's mouth
    assert model["mouth_open_mae"] is None or model["mouth_open_mae"] >= 0


def test_export_the_trained_smoke_checkpoint(smoke_run, tmp_path):
    pytest.importorskip("onnx", reason="export needs onnx (the [export] extra)")
    out = _cli("export", "--from", "g4g", smoke_run / "checkpoint.pt", "--out", tmp_path / "model")
    assert out.returncode == 0, out.stderr[-2000:]
    import json

    manifest = json.loads((tmp_path / "model" / "manifest.json").read_text())
    assert manifest["kind"] == "g4g"
    assert manifest.get("lookahead_s", manifest.get("audio", {}).get("lookahead_s", gdata.LOOKAHEAD_S)) == \
        pytest.approx(gdata.LOOKAHEAD_S)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here); the CPU runs above cover the code")
def test_training_runs_on_cuda(cache, tmp_path):
    from export.g4g.train import run_train
    from export.g4g.train_args import add_train_arguments

    d, _ = cache
    out = run_train(_args(add_train_arguments, GRID, "--out", tmp_path / "run", "--config", "tiny", "--cache", d,
                          "--steps", 3, "--val-every", 3, "--device", "cuda"))
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert out["step"] == 3 and ck["train_info"]["device"].startswith("cuda")
