"""MouthRenderer: rest = reference, opening darkens the mouth, shapes, ONNX export."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engines.avatar import load_avatar
from export.avatar import DEFAULT_SOURCE, prepare_avatar  # noqa: E402
from export.deform_fields import FEATURE_KEYS  # noqa: E402
from export.renderer import MouthRenderer  # noqa: E402


@pytest.fixture(scope="module")
def features(tmp_path_factory: pytest.TempPathFactory) -> dict[str, "torch.Tensor"]:
    d = tmp_path_factory.mktemp("avatars")
    prepare_avatar(DEFAULT_SOURCE, "astro", d)
    return {k: torch.from_numpy(np.asarray(v)) for k, v in load_avatar("astro", d).features.items()}


def _render(features: dict, params: list[list[float]]) -> np.ndarray:
    b = len(params)
    batch = {k: v.expand(b, *v.shape[1:]) for k, v in features.items()}
    with torch.no_grad():
        return MouthRenderer()(torch.tensor(params, dtype=torch.float32), **batch).numpy()


def _mouth(features: dict) -> np.ndarray:
    """Boolean (S, S): the middle of the mouth, just below the closed lip line."""
    u = features["mouth_uv"][0, 0].numpy()
    v = features["lip_v"][0, 0].numpy()
    return (np.abs(u) < 0.4) & (v > 0.02) & (v < 0.2)


def test_rest_is_reference(features: dict) -> None:
    out = _render(features, [[0, 0, 0]])
    assert out.shape == features["ref"].shape and out.dtype == np.float32
    assert np.abs(out - features["ref"].numpy()).max() < 1e-5


def test_opening_darkens_mouth_monotonically(features: dict) -> None:
    out = _render(features, [[0, 0, 0], [0.3, 0, 0], [0.6, 0, 0], [1, 0, 0]])
    assert 0 <= out.min() and out.max() <= 1
    m = _mouth(features)
    lum = [o.mean(0)[m].mean() for o in out]
    assert lum[0] - lum[-1] > 0.3, lum
    ref_dark = features["ref"][0].numpy().mean(0) < 0.25
    dark = [((o.mean(0) < 0.25) & ~ref_dark).sum() for o in out]  # area of the open mouth
    assert dark[0] < dark[1] < dark[2] < dark[3], dark


def test_upper_face_untouched(features: dict) -> None:
    """The nose and everything near the crop border stay exactly the reference."""
    out = _render(features, [[1, 1, 0], [1, -1, 0], [0, 0, 1]])
    ref = features["ref"][0].numpy()
    v = features["lip_v"][0, 0].numpy()
    still = v < -0.7
    still[:4] = still[-4:] = True
    still[:, :4] = still[:, -4:] = True
    assert np.abs(out - ref)[:, :, still].max() < 1e-4


def test_width_and_closure_change_shape(features: dict) -> None:
    out = _render(features, [[0.6, 0, 0], [0.6, 1, 0], [0.6, -1, 0], [0, 0, 0], [1, 0, 1]])
    base, wide, round_, rest, pressed = out
    assert np.abs(wide - base).mean() > 3e-3 and np.abs(round_ - base).mean() > 3e-3
    ref_dark = features["ref"][0].numpy().mean(0) < 0.25  # the suit; keep to the mouth's new dark
    dark = lambda o: (o.mean(0) < 0.25) & ~ref_dark  # noqa: E731
    cols = lambda o: np.flatnonzero(dark(o).any(0))  # noqa: E731
    assert np.ptp(cols(wide)) > np.ptp(cols(base)) > np.ptp(cols(round_))
    assert not dark(pressed)[_mouth(features)].any()  # closure overrides opening
    assert np.abs(pressed - rest).mean() > 1e-4  # and presses the lips


def test_batch_items_independent(features: dict) -> None:
    both = _render(features, [[0.2, 0.5, 0], [0.9, -0.5, 0.1]])
    alone = _render(features, [[0.9, -0.5, 0.1]])
    assert np.abs(both[1] - alone[0]).max() < 1e-6


def test_sampler_is_grid_sample_bilinear_border() -> None:
    """The renderer's gather sampler against torch's grid_sample, inside and far outside the image,
    for a non-square image and output grid, in fp32 and (coordinates kept fp32) fp16."""
    import torch.nn.functional as F

    from export.renderer import _sample

    gen = torch.Generator().manual_seed(0)
    img = torch.rand(3, 5, 40, 56, generator=gen)
    grid = torch.rand(3, 24, 32, 2, generator=gen) * 2.6 - 1.3  # beyond [-1, 1]: border padding
    grid[0, 0, 0] = torch.tensor([1.0, 1.0])  # exactly the last pixel edge
    want = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)
    assert torch.abs(_sample(img, grid) - want).max() < 1e-5  # float rounding of the weights
    half = _sample(img.half(), grid.half())
    assert half.dtype == torch.float16
    want_half = F.grid_sample(img, grid.half().float(), mode="bilinear", padding_mode="border", align_corners=False)
    assert torch.abs(half.float() - want_half).max() < 2e-3  # only the output's fp16 rounding


def test_onnx_export_gathers_not_gridsample(features: dict, tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    b = 2
    params = torch.tensor([[0.7, 0.3, 0.0], [0.2, -0.8, 0.1]])
    inputs = {k: features[k].expand(b, *features[k].shape[1:]).contiguous() for k in FEATURE_KEYS}
    names = ["params", *FEATURE_KEYS]
    buf = io.BytesIO()
    torch.onnx.export(MouthRenderer(), (params, *inputs.values()), buf, opset_version=17, dynamo=False,
                      input_names=names, output_names=["crop"],
                      dynamic_axes={n: {0: "batch"} for n in [*names, "crop"]})
    model = onnx.load_from_string(buf.getvalue())
    assert [i.name for i in model.graph.input] == names
    ops = [n.op_type for n in model.graph.node]
    assert "GridSample" not in ops and ops.count("GatherElements") == 8  # ORT's CPU kernel is slow
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"params": params.numpy(), **{k: v.numpy() for k, v in inputs.items()}})[0]
    with torch.no_grad():
        want = MouthRenderer()(params, **inputs).numpy()
    assert np.abs(got - want).max() < 1e-4
