"""A Wav2Lip-family checkpoint served end to end: export --from, an avatar prepared for it (its
prepare graph's features cached), render --model and serve --model, every engine on the same
serving contract.  Random weights saved in the public checkpoint format stand in for a user's file.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the export path needs torch (the [export] extra)")

REPO = Path(__file__).resolve().parent.parent


def _public_checkpoint(kind: str, path: Path) -> Path:
    """Random weights in the layout of the public files: {"state_dict": {"module.<name>": tensor}}."""
    from export.wav2lip import calibrated_random

    gen = calibrated_random(kind, seed=1)
    torch.save({"state_dict": {f"module.{k}": v for k, v in gen.state_dict().items()}}, str(path))
    return path


@pytest.fixture(scope="module")
def w2l(tmp_path_factory) -> dict:
    """The 96 px variant exported for serving (fp32 + fp16), and an avatar prepared for it."""
    from export.avatar import ensure_default_avatar
    from export.wav2lip_serving import export_for_serving

    tmp = tmp_path_factory.mktemp("w2l")
    ckpt = _public_checkpoint("wav2lip", tmp / "wav2lip.pth")
    manifest = export_for_serving(ckpt, tmp / "model", "wav2lip", fp16=True)
    avatar = ensure_default_avatar(tmp / "avatars", tmp / "model")
    return {"dir": tmp / "model", "manifest": manifest, "avatar": avatar, "avatars": tmp / "avatars",
            "ckpt": ckpt, "tmp": tmp}


def test_manifest_states_the_convention(w2l) -> None:
    m = w2l["manifest"]
    assert m.kind == "wav2lip" and m.is_image_generator and m.crop_size == 96
    assert m.feature_keys == tuple(f"skip{i}" for i in range(7))
    assert m.lookahead_s == pytest.approx(0.1825) and m.face["colour_order"] == "BGR"
    assert m.face["pads"] == [0, 10, 0, 0] and m.face["mask"]["zero_rows_from"] == 48
    assert set(m.onnx) == {"fp32", "fp16"} and set(m.prepare) == {"fp32", "fp16"}
    assert m.convention.lookahead_s == m.lookahead_s  # the server can serve its audio


def test_avatar_features_are_the_prepare_graph_of_its_face(w2l) -> None:
    """The cached features equal the checkpoint's own face encoder on the avatar's masked face."""
    from export.face_features import face_inputs
    from export.wav2lip import load_generator

    avatar = w2l["avatar"]
    assert avatar.features_version == w2l["manifest"].features_version
    assert avatar.crop_size == 96 and avatar.mask.max() == pytest.approx(1.0, abs=1e-3)
    assert avatar.mask[0].max() == 0 and avatar.mask[:40].max() < 0.05  # eyes stay the avatar's
    face6 = face_inputs(np.asarray(avatar.frames), avatar.boxes, w2l["manifest"].face)
    assert np.all(face6[:, :3, 48:] == 0) and face6[:, 3:, 48:].mean() > 0.05  # lower half masked
    gen = load_generator(w2l["ckpt"], "wav2lip")
    with torch.no_grad():
        skips = gen.encode_face(torch.from_numpy(face6))
    for k, ref in zip(w2l["manifest"].feature_keys, skips):
        np.testing.assert_allclose(avatar.features[k], ref.numpy(), atol=1e-4)


def test_served_crop_equals_the_checkpoints_full_forward(w2l) -> None:
    """Engine(mel, rows, gate) on the cached features == the original generator on (mel, face),
    in RGB; a closed gate renders the silent window; FP16 stays close."""
    from engines.onnxruntime_engine import OnnxRuntimeEngine
    from export.face_features import face_inputs
    from export.wav2lip import load_generator

    avatar, m = w2l["avatar"], w2l["manifest"]
    rng = np.random.default_rng(3)
    mel = rng.uniform(-4, 2, (3, 1, 80, 16)).astype(np.float32)
    face6 = torch.from_numpy(face_inputs(np.asarray(avatar.frames), avatar.boxes, m.face)).repeat(3, 1, 1, 1)
    gen = load_generator(w2l["ckpt"], "wav2lip")
    with torch.no_grad():
        ref_rgb = gen(torch.from_numpy(mel), face6).flip(1).numpy()
        silent_rgb = gen(torch.full((1, 1, 80, 16), -4.0), face6[:1]).flip(1).numpy()
    eng = OnnxRuntimeEngine(w2l["dir"])
    rows = np.repeat(eng.add_avatar(avatar.name, avatar.features), 3)
    out = eng.run(mel, rows, np.ones(3, np.float32))
    np.testing.assert_allclose(out.crops, ref_rgb, atol=1e-4)
    assert out.params.shape == (3, 1) and np.all(out.params == 1.0)
    gated = eng.run(mel[:1], rows[:1], np.zeros(1, np.float32))
    np.testing.assert_allclose(gated.crops, silent_rgb, atol=1e-4)
    half = OnnxRuntimeEngine(w2l["dir"], precision="fp16")
    half.add_avatar(avatar.name, avatar.features)
    assert float(np.abs(half.run(mel, rows, np.ones(3, np.float32)).crops - ref_rgb).mean()) < 5e-3


def test_torch_engine_serves_the_same_model(w2l) -> None:
    from engines.onnxruntime_engine import OnnxRuntimeEngine
    from engines.torch_engine import TorchEngine

    avatar = w2l["avatar"]
    mel = np.random.default_rng(4).uniform(-4, 2, (2, 1, 80, 16)).astype(np.float32)
    outs = []
    for eng in (OnnxRuntimeEngine(w2l["dir"]), TorchEngine(w2l["dir"], device="cpu")):
        rows = np.repeat(eng.add_avatar(avatar.name, avatar.features), 2)
        outs.append(eng.run(mel, rows, np.ones(2, np.float32)).crops)
    np.testing.assert_allclose(outs[1], outs[0], atol=1e-4)


def test_an_avatar_of_another_model_is_refused(w2l) -> None:
    from engines.avatar import AvatarError
    from export.avatar import ensure_default_avatar
    from realtime.avatars import load_for_model

    builtin = ensure_default_avatar(w2l["avatars"])  # the built-in model's own default avatar
    assert builtin.name == "default" and builtin.features_version != w2l["manifest"].features_version
    with pytest.raises(AvatarError, match="--model"):
        load_for_model(str(builtin.path), None, w2l["manifest"].features_version, w2l["dir"])


def test_render_with_model_from_the_command_line(w2l, speech_wav) -> None:
    out = w2l["tmp"] / "w2l.mp4"
    r = subprocess.run([sys.executable, "-m", "realtime.cli", "render", "--model", str(w2l["dir"]), "--audio",
                        str(speech_wav), "--out", str(out), "--avatars-dir", str(w2l["avatars"]), "--no-idle-motion"],
                       capture_output=True, text=True, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    import av

    with av.open(str(out)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    base = np.asarray(w2l["avatar"].frames[0])
    x0, y0, x1, y1 = w2l["avatar"].boxes[0]
    diff = np.abs(frames[len(frames) // 2].astype(int) - base).mean(2)
    inside = diff[y0 + (y1 - y0) // 2:y1, x0:x1].mean()
    outside = diff[:y0 - 20].mean()
    assert inside > 5 * max(outside, 0.5), (inside, outside)  # the generated face was pasted there


def test_serve_with_model_streams_generated_frames(w2l) -> None:
    """A real aiortc peer gets 25 fps video from a server running the converted checkpoint."""
    import aiohttp

    from engines.onnxruntime_engine import OnnxRuntimeEngine
    from server_harness import connect, serving

    async def run() -> int:
        engine = OnnxRuntimeEngine(w2l["dir"])
        async with serving(engine, avatars_dir=w2l["avatars"]) as (base, _app):
            async with aiohttp.ClientSession() as http:
                client = await connect(base, http, keep_frames=False)
                await asyncio.sleep(2.0)
                await client.close()
        return len(client.video)

    assert asyncio.run(run()) >= 35


def test_livetalking_checkpoint_exports_and_renders(tmp_path) -> None:
    """The 256 px variant: the public container converts, an avatar is prepared, frames render."""
    from export.avatar import ensure_default_avatar
    from export.wav2lip_serving import export_for_serving
    from engines.onnxruntime_engine import OnnxRuntimeEngine
    from realtime.render import render

    ckpt = _public_checkpoint("wav2lip-livetalking", tmp_path / "wav2lip256.pth")
    m = export_for_serving(ckpt, tmp_path / "model", "wav2lip-livetalking")
    assert m.crop_size == 256 and len(m.feature_keys) == 8
    avatar = ensure_default_avatar(tmp_path / "avatars", tmp_path / "model")
    engine = OnnxRuntimeEngine(tmp_path / "model")
    stats = render(np.zeros(4000, np.float32), avatar, engine, None, batch=2)
    assert stats.frames == 7 and stats.frames_i420[0].shape == (avatar.frames.shape[1] * 3 // 2, avatar.frames.shape[2])


def test_export_from_refuses_a_foreign_file(tmp_path) -> None:
    bad = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(3, 3)}, str(bad))
    r = subprocess.run([sys.executable, "-m", "realtime.cli", "export", "--from", "wav2lip", str(bad),
                        "--out", str(tmp_path / "m")], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 2 and "error:" in r.stderr and "Traceback" not in r.stderr, r.stderr
