"""The backends behind ``engines.Engine``: parity with ONNX Runtime, backend choice, TensorRT errors.

CPU parts run everywhere.  CUDA parts (torch FP16 + CUDA graphs) carry the ``gpu`` marker and skip
without a CUDA device; TensorRT parts skip where ``tensorrt`` is not importable (these machines:
the registry holds only download stubs) and say so.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from engines.manifest import DEFAULT_MODEL_DIR, ModelArtifactError, ModelManifest

torch = pytest.importorskip("torch", reason="the torch engine needs the [export] extra (torch)")

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device (torch.cuda.is_available() is False)")
try:
    import tensorrt  # noqa: F401
    TRT_REASON = "" if CUDA else "TensorRT is installed but there is no CUDA device"
except Exception as exc:  # noqa: BLE001 - the registry stub raises on import
    TRT_REASON = f"TensorRT is not importable here ({exc.__class__.__name__}); build-engine is tested for its error"
needs_trt = pytest.mark.skipif(bool(TRT_REASON), reason=TRT_REASON or "ok")


@pytest.fixture(scope="module")
def reference(avatar):
    """ONNX Runtime FP32 on a batch that mixes silence, speech and avatar rows: the parity reference."""
    from engines.onnxruntime_engine import OnnxRuntimeEngine

    eng = OnnxRuntimeEngine()
    assert eng.precision == "fp32"
    eng.add_avatar(avatar.name, avatar.features)
    rng = np.random.default_rng(7)
    b = 12
    mel = rng.uniform(-4, 2, (b, 1, 80, 16)).astype(np.float32)
    mel[:3] = eng.convention.silence_value
    rows = rng.integers(0, avatar.n_frames, b).astype(np.int64)
    gate = np.ones(b, np.float32)
    gate[:3] = 0.0
    return (mel, rows, gate), eng.run(mel, rows, gate)


def _diff(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    d = np.abs(a - b)
    return float(d.max()), float(d.mean())


def test_silent_items_skip_the_graph_with_the_output_it_would_give(avatar, reference):
    """The built-in model at gate 0: parameters 0 and the reference crop, bit for bit, so the
    frame step may skip the graph for them; a mixed batch gives what the whole batch gives."""
    from engines.onnxruntime_engine import OnnxRuntimeEngine

    (mel, rows, gate), want = reference
    assert np.all(want.params[:3] == 0.0)
    assert np.array_equal(want.crops[:3], np.asarray(avatar.features["ref"], np.float32)[rows[:3]])
    eng = OnnxRuntimeEngine()
    eng.add_avatar(avatar.name, avatar.features)
    calls = []
    inner = eng.run
    eng.run = lambda m, r, g: calls.append(len(r)) or inner(m, r, g)  # count what reaches the graph
    got = eng.run_skipping_silence(mel, rows, gate)
    assert calls == [len(rows) - 3]
    assert np.abs(got.crops - want.crops).max() < 1e-5 and np.abs(got.params - want.params).max() < 1e-6
    eng.run_skipping_silence(mel[:3], rows[:3], gate[:3])  # all silent: no call at all
    assert calls == [len(rows) - 3]


def test_torch_cpu_matches_onnxruntime(avatar, reference):
    from engines.torch_engine import TorchEngine

    (mel, rows, gate), ref = reference
    eng = TorchEngine(device="cpu")
    assert eng.name == "torch-cpu" and eng.precision == "fp32"
    eng.add_avatar(avatar.name, avatar.features)
    out = eng.run(mel, rows, gate)
    assert out.crops.shape == ref.crops.shape and out.crops.dtype == np.float32
    assert _diff(out.crops, ref.crops)[0] < 1e-4
    assert _diff(out.params, ref.params)[0] < 1e-5
    # one call per frame gives what the batch gave: rows really select per item
    single = np.concatenate([eng.run(mel[i:i + 1], rows[i:i + 1], gate[i:i + 1]).crops for i in range(3, 6)])
    assert _diff(single, out.crops[3:6])[0] < 1e-5


def test_torch_cpu_fp16_graph_runs_in_half(avatar, reference):
    """The FP16 module a GPU runs has no float32 constants left in it (dtype mismatches would raise)."""
    from engines.torch_engine import TorchEngine

    (mel, rows, gate), ref = reference
    eng = TorchEngine(device="cpu", precision="fp16")
    eng.add_avatar(avatar.name, avatar.features)
    out = eng.run(mel, rows, gate)
    worst, mean = _diff(out.crops, ref.crops)
    # half precision flips the odd pixel on the lip line's hard threshold; on average it agrees
    assert mean < 2e-3, (worst, mean)
    assert _diff(out.params, ref.params)[0] < 5e-3


def _dimmed(avatar, n: int, scale: float) -> dict[str, np.ndarray]:
    """``n`` frames of the built-in avatar with a darker reference image: another avatar's features."""
    return {k: np.repeat(v[:1], n, axis=0) * (scale if k == "ref" else 1.0) for k, v in avatar.features.items()}


def test_torch_cpu_reuploads_tables_as_avatars_come_and_go(avatar, reference):
    """remove_avatar goes through the same re-upload: the device tables follow ``table_rows`` and
    the kept avatar, at the rows it was given, still matches ONNX Runtime."""
    from engines.torch_engine import TorchEngine

    (mel, rows, gate), ref = reference
    eng = TorchEngine(device="cpu")
    eng.add_avatar("before", _dimmed(avatar, 3, 0.5))
    own = eng.add_avatar(avatar.name, avatar.features)
    assert own[0] == 3
    eng.remove_avatar("before")  # a hole in front of it
    assert eng.table_rows == 4 and all(t.shape[0] == 4 for t in eng._dev_tables)
    assert _diff(eng.run(mel, own[rows], gate).crops, ref.crops)[0] < 1e-4
    eng.add_avatar("reused", _dimmed(avatar, 2, 0.6))  # into the hole
    eng.add_avatar("after", _dimmed(avatar, 2, 0.7))  # appended
    assert eng.avatar_rows("reused")[0] == 0 and eng.table_rows == 6
    assert _diff(eng.run(mel, own[rows], gate).crops, ref.crops)[0] < 1e-4
    eng.remove_avatar("after")
    assert eng.table_rows == 4 and all(t.shape[0] == 4 for t in eng._dev_tables)
    for a in ("reused", avatar.name):
        eng.remove_avatar(a)
    assert eng.table_rows == 0 and eng._dev_tables == ()


def test_torch_engine_without_weights_names_the_fix(tmp_path):
    from engines.torch_engine import TorchEngine

    for f in DEFAULT_MODEL_DIR.iterdir():
        shutil.copy(f, tmp_path / f.name)
    data = json.loads((tmp_path / "manifest.json").read_text())
    data["torch"] = {}
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ModelArtifactError, match="lipstream export"):
        TorchEngine(tmp_path, device="cpu")


def test_auto_picks_onnxruntime_without_gpu_and_unknown_names_fail():
    from engines.factory import create_engine, pick_backend

    if not CUDA:
        assert pick_backend() == "onnxruntime"
    with pytest.raises(ValueError, match="choose one of"):
        create_engine("tflite")


def test_padding_sizes():
    from engines.cuda_step import padded_size

    assert [padded_size(n) for n in (1, 2, 3, 5, 8, 9, 33, 64, 65)] == [1, 2, 4, 8, 8, 16, 64, 64, 65]


def test_plan_key_separates_gpus_versions_and_models():
    from engines.tensorrt_engine import plan_key

    m = ModelManifest.load(DEFAULT_MODEL_DIR)
    a = plan_key(m, "fp16", "10.13.0", "NVIDIA H100 80GB HBM3")
    paths = {a.plan_path(DEFAULT_MODEL_DIR, m.name, "fp16"),
             plan_key(m, "fp16", "11.0.0", "NVIDIA H100 80GB HBM3").plan_path(DEFAULT_MODEL_DIR, m.name, "fp16"),
             plan_key(m, "fp16", "10.13.0", "NVIDIA H200").plan_path(DEFAULT_MODEL_DIR, m.name, "fp16"),
             plan_key(m, "fp32", "10.13.0", "NVIDIA H100 80GB HBM3").plan_path(DEFAULT_MODEL_DIR, m.name, "fp32")}
    assert len(paths) == 4
    assert a.onnx_sha256 == m.onnx_sha256["fp16"]


@pytest.mark.skipif(not TRT_REASON, reason="TensorRT is usable here; the engine tests below run instead")
def test_build_engine_without_tensorrt_fails_clearly(capsys):
    from realtime.cli import main

    rc = main(["build-engine", str(DEFAULT_MODEL_DIR / "generator_fp16.onnx")])
    err = capsys.readouterr().err
    assert rc == 3
    assert "error:" in err and ("TensorRT" in err or "CUDA" in err) and "--engine" in err
    assert "Traceback" not in err


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_torch_cuda_graphs_match_onnxruntime(avatar, reference, precision):
    from engines.torch_engine import TorchEngine

    (mel, rows, gate), ref = reference
    eng = TorchEngine(device="cuda", precision=precision)
    assert eng.precision == precision
    eng.add_avatar(avatar.name, avatar.features)
    out = eng.run(mel, rows, gate)  # 12 -> padded into the batch-16 graph
    assert 16 in eng._steps and eng._steps[16].graph is not None
    # the padding is the model's silence, not a constant of the step
    assert (eng._steps[16].h_mel.numpy()[12:] == eng.convention.silence_value).all()
    worst, mean = _diff(out.crops, ref.crops)
    assert mean < (1e-5 if precision == "fp32" else 2e-3), (worst, mean)
    again = eng.run(mel, rows, gate)  # a replay gives the same frames
    assert _diff(again.crops, out.crops)[0] == 0.0
    eager = TorchEngine(device="cuda", precision=precision, cuda_graphs=False)
    eager.add_avatar(avatar.name, avatar.features)
    assert _diff(eager.run(mel, rows, gate).crops, out.crops)[0] < 1e-3
    # avatars added and removed around it: tables re-uploaded, graphs re-captured, same frames
    eng.add_avatar("other", _dimmed(avatar, 3, 0.5))
    own = eng.add_avatar("second", avatar.features)  # rows 4.. behind the other one
    eng.remove_avatar("other")
    assert not eng._steps and eng._dev_tables[0].shape[0] == eng.table_rows == 5 and own[0] == 4
    later = eng.run(mel, own[rows], gate)
    assert 16 in eng._steps and _diff(later.crops, out.crops)[0] < 1e-3


@pytest.mark.gpu
@needs_trt
def test_tensorrt_engine_builds_caches_and_matches(tmp_path, avatar, reference):
    from engines.tensorrt_engine import TensorRTEngine
    from export.trt_build import build_engine

    plan = build_engine(DEFAULT_MODEL_DIR / "generator_fp16.onnx", max_batch=16, opt_batch=4, cache_dir=tmp_path)
    assert plan.is_file() and json.loads(plan.with_suffix(".json").read_text())["max_batch"] == 16
    assert build_engine(DEFAULT_MODEL_DIR / "generator_fp16.onnx", cache_dir=tmp_path) == plan  # cached
    (mel, rows, gate), ref = reference
    eng = TensorRTEngine(precision="fp16", cache_dir=tmp_path)
    assert eng.precision == "fp16"
    eng.add_avatar(avatar.name, avatar.features)
    out = eng.run(mel, rows, gate)
    assert _diff(out.crops, ref.crops)[1] < 2e-3
