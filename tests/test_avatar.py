"""Avatar preparation: the built-in still, the stored layout, and the errors users will meet."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from engines.avatar import AvatarError, default_avatars_dir, load_avatar
from realtime.avatars import load_for_model
from export.avatar import DEFAULT_SOURCE, ensure_default_avatar, prepare_avatar
from export.deform_fields import FEATURE_KEYS, FEATURES_VERSION, blend_mask
from export.landmarks import INNER_LIP_MID, FaceMesh


@pytest.fixture(scope="module")
def avatars(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("avatars")
    prepare_avatar(DEFAULT_SOURCE, "astro", d)
    return d


def _write_png(path: Path, rgb: np.ndarray) -> Path:
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def test_layout_shapes_and_manifest(avatars: Path) -> None:
    d = avatars / "astro"
    assert sorted(p.name for p in d.iterdir()) == sorted(
        ["manifest.json", "frames.npy", "boxes.npy", "mask.npy", "features.npz", "mouth_boxes.npy", "landmarks.npy"])
    man = json.loads((d / "manifest.json").read_text())
    assert man["n_frames"] == 1 and man["frame_size"] == [512, 512] and man["crop_size"] == 128
    assert man["features_version"] == FEATURES_VERSION and len(man["source_sha256"]) == 64
    assert load_avatar(d).features_version == FEATURES_VERSION  # by path, too
    av = load_avatar("astro", avatars)
    s = 128
    assert av.frames.shape == (1, 512, 512, 3) and av.frames.dtype == np.uint8
    assert av.boxes.shape == (1, 4) and av.boxes.dtype == np.int32
    x0, y0, x1, y1 = av.boxes[0]
    assert x1 - x0 == y1 - y0 and 0 <= x0 and 0 <= y0 and x1 <= 512 and y1 <= 512
    assert av.mask.shape == (s, s) and av.mask.dtype == np.float32
    assert av.mask.min() >= 0 and av.mask.max() <= 1 and av.mask[s // 2, s // 2] == 1
    assert np.all(av.mask[0] == 0) and np.all(av.mask[:, -1] == 0)
    f = av.features
    assert set(f) == set(FEATURE_KEYS)
    expected = {"ref": (1, 3, s, s), "basis": (1, 3, 2, s, s), "upper_open": (1, 2, s, s),
                "mouth_uv": (1, 2, s, s), "lip_v": (1, 1, s, s), "colors": (1, 2, 3)}
    for k, shape in expected.items():
        assert f[k].shape == shape and f[k].dtype == np.float32, k
    assert 0 <= f["ref"].min() and f["ref"].max() <= 1
    cavity, teeth = f["colors"][0]
    assert cavity.mean() < 0.3 < 0.6 < teeth.mean()
    mb = av.mouth_boxes[0]
    assert x0 <= mb[0] < mb[2] <= x1 and y0 <= mb[1] < mb[3] <= y1


def test_crop_geometry_mouth_inside(avatars: Path) -> None:
    """The mouth sits in the crop's upper middle, the fields vanish at the mask's feather and rim."""
    av = load_avatar("astro", avatars)
    uv = av.features["mouth_uv"][0]
    s = av.crop_size
    iy, ix = np.unravel_index(np.argmin(np.hypot(uv[0], uv[1])), (s, s))
    assert 0.3 * s < ix < 0.7 * s and 0.25 * s < iy < 0.5 * s
    fields = np.concatenate([av.features["basis"][0].reshape(-1, s, s), av.features["upper_open"][0]])
    assert np.abs(fields[:, av.mask < 0.99]).max() < 1e-6
    assert np.abs(fields).max() > 0.05  # and they do move something


def test_fields_zero_on_nose(avatars: Path) -> None:
    av = load_avatar("astro", avatars)
    v = av.features["lip_v"][0, 0]
    fields = np.concatenate([av.features["basis"][0].reshape(-1, *v.shape), av.features["upper_open"][0]])
    # The nose base is ~0.64 half-widths above the lip line on this face.
    assert np.abs(fields[:, v < -0.6]).max() < 1e-6


def test_reference_mouth_is_closed(avatars: Path, tmp_path: Path) -> None:
    """The astronaut smiles with teeth; the neutral reference must have its lips together."""
    av = load_avatar("astro", avatars)
    frame = np.array(av.frames[0])
    x0, y0, x1, y1 = av.boxes[0]
    ref = (av.features["ref"][0].transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)
    frame[y0:y1, x0:x1] = cv2.resize(ref, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    with FaceMesh() as mesh:
        before = mesh.detect(np.asarray(av.frames[0]))
        after = mesh.detect(frame)
    gap = lambda lm: np.linalg.norm(lm[INNER_LIP_MID[0]] - lm[INNER_LIP_MID[1]])  # noqa: E731
    assert gap(before) > 5 and gap(after) < 0.3 * gap(before)


def test_reprepare_replaces_atomically(tmp_path: Path) -> None:
    d = tmp_path / "avatars"
    prepare_avatar(DEFAULT_SOURCE, "a", d)
    first = json.loads((d / "a" / "manifest.json").read_text())["created"]
    prepare_avatar(DEFAULT_SOURCE, "a", d)
    assert json.loads((d / "a" / "manifest.json").read_text())["created"] >= first
    assert sorted(p.name for p in d.iterdir()) == ["a"]  # no temp dirs left behind


def test_not_an_image(tmp_path: Path) -> None:
    bad = tmp_path / "notes.png"
    bad.write_text("definitely not a picture")
    with pytest.raises(AvatarError, match="cannot read"):
        prepare_avatar(bad, "x", tmp_path / "avatars")
    assert not (tmp_path / "avatars" / "x").exists()


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AvatarError, match="does not exist"):
        prepare_avatar(tmp_path / "nope.jpg", "x", tmp_path / "avatars")


def test_no_face(tmp_path: Path) -> None:
    grey = _write_png(tmp_path / "grey.png", np.full((256, 256, 3), 128, np.uint8))
    with pytest.raises(AvatarError, match="no face"):
        prepare_avatar(grey, "x", tmp_path / "avatars")
    assert not (tmp_path / "avatars" / "x").exists()


def test_tiny_face(tmp_path: Path) -> None:
    astro = cv2.cvtColor(cv2.imread(str(DEFAULT_SOURCE)), cv2.COLOR_BGR2RGB)
    small = _write_png(tmp_path / "small.png", cv2.resize(astro, (128, 128), interpolation=cv2.INTER_AREA))
    with pytest.raises(AvatarError, match=r"too small.*minimum is \d+ px"):
        prepare_avatar(small, "x", tmp_path / "avatars")


def test_bad_name(tmp_path: Path) -> None:
    with pytest.raises(AvatarError, match="invalid avatar name"):
        prepare_avatar(DEFAULT_SOURCE, "../escape", tmp_path)


def test_default_avatar_prepared_once_and_refreshed_when_stale(tmp_path: Path) -> None:
    av = ensure_default_avatar(tmp_path)
    assert av.name == "default" and av.n_frames == 1
    man_path = tmp_path / "default" / "manifest.json"
    stamp = man_path.stat().st_mtime_ns
    ensure_default_avatar(tmp_path)
    assert man_path.stat().st_mtime_ns == stamp  # not prepared again
    man = json.loads(man_path.read_text())
    man["features_version"] = FEATURES_VERSION - 1
    man_path.write_text(json.dumps(man))
    assert load_avatar("default", tmp_path).features_version == FEATURES_VERSION - 1  # loading reads it as it is
    with pytest.raises(AvatarError, match="prepare SOURCE --name"):  # the model check refuses it
        load_for_model(str(tmp_path / "default"), None, FEATURES_VERSION)
    assert ensure_default_avatar(tmp_path).manifest["features_version"] == FEATURES_VERSION


def test_default_avatars_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LIPSTREAM_HOME", str(tmp_path))
    assert default_avatars_dir() == tmp_path / "avatars"
    monkeypatch.delenv("LIPSTREAM_HOME")
    assert default_avatars_dir() == Path(os.path.expanduser("~")) / ".cache" / "lipstream" / "avatars"


def test_video_avatar_smooth_boxes(tmp_path: Path) -> None:
    """A short video: frames resampled to 25 fps, one box size, progress reported per frame."""
    import av as pyav

    astro = cv2.cvtColor(cv2.imread(str(DEFAULT_SOURCE)), cv2.COLOR_BGR2RGB)[:384, 64:448]
    path = tmp_path / "clip.mp4"
    with pyav.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=25)
        st.width, st.height, st.pix_fmt = 384, 384, "yuv420p"
        for i in range(8):  # a slow pan: the box must follow it
            shifted = np.roll(astro, i, axis=1)
            for pkt in st.encode(pyav.VideoFrame.from_ndarray(shifted, format="rgb24")):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)
    seen: list[tuple[int, int]] = []
    prepare_avatar(path, "clip", tmp_path / "avatars", progress=lambda d, n: seen.append((d, n)))
    av = load_avatar("clip", tmp_path / "avatars")
    assert av.n_frames == 8 and av.manifest["kind"] == "video" and av.fps == 25
    assert seen[-1] == (8, 8) and len(seen) == 8
    sides = av.boxes[:, 2] - av.boxes[:, 0]
    assert np.all(sides == sides[0])
    assert av.boxes[-1, 0] - av.boxes[0, 0] in range(4, 11)  # followed the 7 px pan
    assert av.features["basis"].shape[0] == 8


def test_blend_mask_symmetric() -> None:
    m = blend_mask(96)
    assert np.allclose(m, m[::-1]) and np.allclose(m, m[:, ::-1])


def test_several_faces_uses_largest(caplog: pytest.LogCaptureFixture) -> None:
    astro = cv2.cvtColor(cv2.imread(str(DEFAULT_SOURCE)), cv2.COLOR_BGR2RGB)
    face = astro[30:250, 130:310]  # mediapipe's detector needs faces that fill the picture
    canvas = np.full((400, 512, 3), 200, np.uint8)
    canvas[40:352, 256:512] = cv2.resize(face, (256, 312))
    canvas[90:310, 30:210] = cv2.resize(face, (180, 220))
    with caplog.at_level("WARNING"), FaceMesh() as mesh:
        lm = mesh.detect(canvas)
    assert lm is not None and lm[:, 0].min() > 256  # the bigger face, on the right
    assert "2 faces found" in caplog.text
