"""A G4G run served end to end: export --from g4g, avatars prepared for it (its prepare graph's
features cached), the serving graph against the torch model, render --model and serve --model.
A randomly initialised tiny G4G saved in the run-checkpoint format stands in for a trained run."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the G4G export needs torch (the [export] extra)")

REPO = Path(__file__).resolve().parent.parent
GRID_CLIP = REPO / "tests" / "data" / "grid" / "brbk7n.mpg"
WINDOW_S = 3.0  # seconds of streaming the serve test watches


def _run_checkpoint(path: Path, seed: int = 0) -> Path:
    """A tiny G4G whose deformation has left the identity (so the audio reaches the face), saved
    as `lipstream train` saves a run."""
    from export.g4g import G4G, PRESETS

    torch.manual_seed(seed)
    gen = G4G(PRESETS["tiny"])
    with torch.no_grad():
        gen.deform.out.weight.normal_(0, 0.05)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "lipstream-g4g", "version": 1, "config": gen.cfg.to_dict(), "generator": gen.state_dict(),
                "step": 0, "train_info": {"lookahead_s": 0.1}}, str(path))
    return path


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "realtime.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def g4g(tmp_path_factory) -> dict:
    """The run exported for serving through the CLI (fp32 + fp16), the built-in portrait prepared."""
    from engines.manifest import ModelManifest
    from export.avatar import ensure_default_avatar
    from export.g4g.serving import load_checkpoint

    tmp = tmp_path_factory.mktemp("g4g")
    ckpt = _run_checkpoint(tmp / "run" / "checkpoint.pt")
    r = _cli("export", "--from", "g4g", str(ckpt), "--out", str(tmp / "model"), "--fp16")
    assert r.returncode == 0, r.stderr[-3000:]
    avatar = ensure_default_avatar(tmp / "avatars", tmp / "model")
    return {"dir": tmp / "model", "manifest": ModelManifest.load(tmp / "model"), "avatar": avatar,
            "avatars": tmp / "avatars", "gen": load_checkpoint(ckpt)[0], "tmp": tmp, "ckpt": ckpt}


def _torch_inputs(avatar, face: dict) -> tuple[torch.Tensor, ...]:  # noqa: ANN001
    """The prepare inputs of an avatar, rebuilt from its frames with the training code's functions."""
    from export.g4g import faces
    from export.landmarks import FaceMesh

    frames = np.asarray(avatar.frames)
    with FaceMesh(video=False) as mesh:
        lms = np.stack([mesh.detect(f) for f in frames])
    boxes = faces.crop_boxes(lms, frames.shape[1:3])
    np.testing.assert_array_equal(boxes, avatar.boxes)
    s = int(face["size"])
    crops = faces.crop_faces(frames, boxes, s)
    refs = crops[faces.pick_references(len(frames), int(face["n_refs"]))].reshape(1, -1, s, s)
    return (torch.from_numpy(faces.mask_lower(crops, face["mask_from"])),
            torch.from_numpy(np.repeat(refs, len(frames), 0)),
            torch.from_numpy(faces.landmark_prior(faces.crop_landmarks(lms, boxes, s), s)))


def test_export_writes_a_valid_g4g_model(g4g) -> None:
    import onnx

    from export.g4g import G4G
    from export.serving_graph import check_grid_samples

    m, d = g4g["manifest"], g4g["dir"]
    assert m.kind == "g4g" and m.is_image_generator and m.crop_size == 64 and m.opset == 17
    assert m.feature_keys == G4G.FEATURE_KEYS and m.params == ("voice",) and m.lookahead_s == pytest.approx(0.1)
    assert m.face["colour_order"] == "RGB" and m.face["mask"]["zero_rows_from"] == 32 and m.face["n_refs"] == 5
    assert set(m.onnx) == {"fp32", "fp16"} and m.prepare == {"fp32": "prepare.onnx"}
    assert m.torch["builder"] == "export.g4g.serving:load_serving_generator"
    assert m.extra["parity_max_abs_diff"] < 1e-4
    prep = onnx.load(str(d / "prepare.onnx"))
    assert [i.name for i in prep.graph.input] == ["source_masked", "refs", "prior"]
    assert [o.name for o in prep.graph.output] == list(G4G.FEATURE_KEYS)
    for precision in ("fp32", "fp16"):
        graph = onnx.load(str(m.onnx_path(d, precision)))
        assert [i.name for i in graph.graph.input] == ["mel", "rows", "gate", *G4G.FEATURE_KEYS]
        # one warp per scale (S/4 reference, S/2 and S skips): bilinear, 4-D (raises otherwise)
        assert check_grid_samples(m.onnx_path(d, precision)) == 3
        modes = [a.s for n in graph.graph.node if n.op_type == "GridSample" for a in n.attribute if a.name == "mode"]
        assert modes == [b"bilinear"] * 3
    assert m.convention.lookahead_s == m.lookahead_s  # the server can serve its audio


def test_the_grid_sample_check_refuses_a_nearest_node(g4g, tmp_path) -> None:
    """What the export asserts can fail: a GridSample turned to 'nearest' is refused by name."""
    import onnx

    from export.serving_graph import check_grid_samples

    graph = onnx.load(str(g4g["manifest"].onnx_path(g4g["dir"])))
    node = next(n for n in graph.graph.node if n.op_type == "GridSample")
    next(a for a in node.attribute if a.name == "mode").s = b"nearest"
    onnx.save(graph, str(tmp_path / "bad.onnx"))
    with pytest.raises(RuntimeError, match="nearest"):
        check_grid_samples(tmp_path / "bad.onnx")


def test_avatar_features_are_the_prepare_of_its_face(g4g) -> None:
    avatar, m = g4g["avatar"], g4g["manifest"]
    assert avatar.features_version == m.features_version and avatar.crop_size == 64
    src, refs, prior = _torch_inputs(avatar, m.face)
    assert float(src[:, :, 32:].abs().max()) == 0 and float(src[:, :, :32].mean()) > 0.05
    with torch.no_grad():
        ref = g4g["gen"].prepare(src, refs, prior)
    for k in m.feature_keys:
        np.testing.assert_allclose(avatar.features[k], ref[k].numpy(), atol=1e-4, err_msg=k)


def test_served_crop_equals_the_torch_forward(g4g) -> None:
    """Engine(mel, rows, gate) on the cached features == G4G.forward on the avatar's inputs; a closed
    gate renders the silent window; FP16 stays close; the torch engine agrees."""
    from engines.mel import SILENCE_VALUE
    from engines.onnxruntime_engine import OnnxRuntimeEngine
    from engines.torch_engine import TorchEngine

    avatar, gen = g4g["avatar"], g4g["gen"]
    rng = np.random.default_rng(3)
    mel = rng.uniform(-4, 2, (3, 1, 80, 16)).astype(np.float32)
    src, refs, prior = (t.repeat(3, 1, 1, 1) for t in _torch_inputs(avatar, g4g["manifest"].face))
    with torch.no_grad():
        ref = gen(src, refs, prior, torch.from_numpy(mel)).face.numpy()
        silent = gen(src[:1], refs[:1], prior[:1], torch.full((1, 1, 80, 16), SILENCE_VALUE)).face.numpy()
    eng = OnnxRuntimeEngine(g4g["dir"])
    rows = np.repeat(eng.add_avatar(avatar.name, avatar.features), 3)
    out = eng.run(mel, rows, np.ones(3, np.float32))
    np.testing.assert_allclose(out.crops, ref, atol=1e-4)
    assert out.params.shape == (3, 1) and np.all(out.params == 1.0)
    assert np.abs(out.crops[0] - out.crops[1]).max() > 1e-3  # different audio, different face
    gated = eng.run(mel[:1], rows[:1], np.zeros(1, np.float32))
    np.testing.assert_allclose(gated.crops, silent, atol=1e-4)
    half = OnnxRuntimeEngine(g4g["dir"], precision="fp16")
    half.add_avatar(avatar.name, avatar.features)
    assert float(np.abs(half.run(mel, rows, np.ones(3, np.float32)).crops - ref).mean()) < 5e-3
    te = TorchEngine(g4g["dir"], device="cpu")
    te.add_avatar(avatar.name, avatar.features)
    np.testing.assert_allclose(te.run(mel, rows, np.ones(3, np.float32)).crops, out.crops, atol=1e-4)


def test_prepare_and_render_a_real_face_from_the_command_line(g4g, speech_wav) -> None:
    """`lipstream prepare --model` on a GRID clip, then `render --model` writes the speech's MP4
    with the generated lower face pasted in."""
    import av

    from engines.avatar import load_avatar

    r = _cli("prepare", str(GRID_CLIP), "--name", "grid", "--model", str(g4g["dir"]), "--avatars-dir",
             str(g4g["avatars"]), "--max-frames", "20")
    assert r.returncode == 0, r.stderr[-2000:]
    avatar = load_avatar("grid", g4g["avatars"])
    assert avatar.frames.shape[0] == 20 and avatar.features["reference"].shape == (20, 32, 16, 16)
    out = g4g["tmp"] / "g4g.mp4"
    r = _cli("render", "--model", str(g4g["dir"]), "--avatar", "grid", "--audio", str(speech_wav), "--out", str(out),
             "--avatars-dir", str(g4g["avatars"]), "--no-idle-motion")
    assert r.returncode == 0, r.stderr[-2000:]
    with av.open(str(out)) as c:
        assert c.streams.audio and c.streams.video
        duration = float(c.duration) / 1e6
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    with av.open(str(out)) as c:
        chunks = [f.to_ndarray() for f in c.decode(audio=0)]
    pcm = np.concatenate([a.reshape(-1) for a in chunks]).astype(np.float64)
    if np.issubdtype(chunks[0].dtype, np.integer):
        pcm /= 32768.0
    assert duration > 2.0 and len(frames) > 50
    assert np.sqrt(np.mean(pcm ** 2)) > 0.01  # the speech is there, not silence
    k = len(frames) // 2
    base = np.asarray(avatar.frames[k % len(avatar.frames)]).astype(int)
    x0, y0, x1, y1 = avatar.boxes[k % len(avatar.boxes)]
    diff = np.abs(frames[k].astype(int) - base).mean(2)
    inside = diff[y0 + (y1 - y0) * 6 // 10:y1 - (y1 - y0) // 10, x0 + (x1 - x0) // 4:x1 - (x1 - x0) // 4].mean()
    outside = diff[:max(1, y0 - 10)].mean()
    assert inside > 5 * max(outside, 0.5), (inside, outside)  # the generated face was pasted there


def test_serve_with_model_streams_generated_frames(g4g) -> None:
    """A real aiortc peer gets video on the 25 fps clock from a server running the exported G4G model, and the
    mouth region it receives is the generator's, not the avatar's own pixels."""
    import aiohttp

    from engines.onnxruntime_engine import OnnxRuntimeEngine
    from server_harness import connect, serving

    avatar = g4g["avatar"]
    x0, y0, x1, y1 = (int(v) for v in avatar.boxes[0])
    box = (x0 + (x1 - x0) // 4, y0 + (y1 - y0) * 6 // 10, x1 - (x1 - x0) // 4, y1 - (y1 - y0) // 10)

    async def run():  # noqa: ANN202
        engine = OnnxRuntimeEngine(g4g["dir"])
        async with serving(engine, avatars_dir=g4g["avatars"]) as (base, _app):
            async with aiohttp.ClientSession() as http:
                client = await connect(base, http, mouth_box=box)
                for _ in range(200):  # connection set-up (ICE, DTLS) is slow on a loaded machine
                    if client.video:
                        break
                    await asyncio.sleep(0.05)
                await asyncio.sleep(WINDOW_S)
                await client.close()
        return client

    client = asyncio.run(run())
    assert client.video, "no video frame arrived within 10 s"
    t_first = client.video[0][0]
    n = sum(1 for t, _ in client.video if t - t_first < WINDOW_S)
    # 25 fps is 75 frames in 3 s; on this 2-core machine shared with other jobs (load ~12) the server
    # stalled up to 0.7 s at a time and skipped those frames (pts jumps), delivering 17-35 in 2 s
    assert n >= 25, n
    pts = np.asarray(client.video_pts[:n])
    assert np.all(pts % 3600 == 0) and np.all(np.diff(pts) > 0)  # the 25 fps media clock, in order
    assert (pts[-1] - pts[0]) / 90000 > 0.6 * WINDOW_S  # the clock kept up with real time
    own = np.asarray(avatar.frames[0])[box[1]:box[3], box[0]:box[2]].astype(int)
    last = client.video[-1][1].astype(int)
    assert last.shape == own.shape and np.abs(last - own).mean() > 5


@pytest.mark.parametrize("kind", ["wav2lip", "truncated", "other-format", "wrong-shapes"])
def test_export_refuses_what_is_not_a_g4g_run(g4g, tmp_path, kind, capsys) -> None:
    """Exit 2 and a message naming the expected format; the first case through the real CLI."""
    from export.onnx_export import main

    bad = tmp_path / "checkpoint.pt"
    if kind == "wav2lip":
        torch.save({"state_dict": {"module.audio_encoder.0.conv_block.0.weight": torch.zeros(3)}}, str(bad))
    elif kind == "truncated":
        bad.write_bytes(g4g["ckpt"].read_bytes()[:5000])
    elif kind == "other-format":
        torch.save({"format": "lipstream-g4g-sync", "version": 1}, str(bad))
    else:
        blob = torch.load(str(g4g["ckpt"]), weights_only=True)
        blob["config"]["channels"] = 64
        torch.save(blob, str(bad))
    args = ["--from", "g4g", str(bad), "--out", str(tmp_path / "m")]
    if kind == "wav2lip":
        r = _cli("export", *args)
        code, err = r.returncode, r.stderr
    else:
        code, err = main(args), capsys.readouterr().err
    assert code == 2, err[-2000:]
    assert "error:" in err and "Traceback" not in err and "lipstream-g4g" in err, err
    assert not (tmp_path / "m" / "manifest.json").exists()
    if kind == "wav2lip":
        assert "--from wav2lip" in err
