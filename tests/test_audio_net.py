"""The audio-to-mouth net: contract, speed, ONNX export, committed weights (export.audio_net)."""

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from export import audio_net
from export.audio_net import AudioToMouth, load_checkpoint, load_default
from engines.mel import SILENCE_VALUE


def test_output_ranges_and_shape():
    torch.manual_seed(0)
    m = AudioToMouth().eval()
    x = torch.empty(64, 1, 80, 16).uniform_(-4, 4)
    with torch.no_grad():
        y = m(x)
    assert y.shape == (64, 3) and y.dtype == torch.float32
    assert (y[:, 0] >= 0).all() and (y[:, 0] <= 1).all()
    assert (y[:, 1] >= -1).all() and (y[:, 1] <= 1).all()
    assert (y[:, 2] >= 0).all() and (y[:, 2] <= 1).all()


def test_size_and_cpu_latency():
    torch.set_num_threads(1)
    m = AudioToMouth().eval()
    n = sum(p.numel() for p in m.parameters())
    assert 10_000 < n < 250_000
    x = torch.zeros(1, 1, 80, 16)
    with torch.no_grad():
        for _ in range(20):
            m(x)
        t = time.perf_counter()
        for _ in range(200):
            m(x)
    per = (time.perf_counter() - t) / 200
    assert per < 2e-3, f"{per * 1e3:.2f} ms per window"  # ~0.42 ms measured (v3 sizes); slack for shared CPUs


def test_onnx_opset17_export_matches_torch():
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    m = AudioToMouth().eval()
    x = torch.empty(5, 1, 80, 16).uniform_(-4, 4)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "a.onnx"
        torch.onnx.export(m, (x,), str(p), opset_version=17, input_names=["mel"], output_names=["mouth"],
                          dynamic_axes={"mel": {0: "batch"}, "mouth": {0: "batch"}}, dynamo=False)
        ops = {n.op_type for n in onnx.load(str(p)).graph.node}
        y = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"mel": x.numpy()})[0]
    assert ops <= {"Conv", "Relu", "Gemm", "Flatten", "ReduceMax", "Sub", "Add", "Mul", "Concat",
                   "Sigmoid", "Tanh", "Slice", "Constant", "Reshape", "Gather", "Unsqueeze"}
    with torch.no_grad():
        assert np.abs(y - m(x).numpy()).max() < 1e-5


def test_committed_weights_load_with_metadata():
    ck = load_checkpoint()
    assert ck["lookahead_s"] == pytest.approx(0.04) == audio_net.LOOKAHEAD_S
    assert ck["outputs"] == ["open", "width", "closure"]
    assert audio_net.WEIGHTS_PATH.stat().st_size < 1_000_000
    m = load_default()
    assert not m.training
    from export.train_audio import LOOKAHEAD_S as TRAIN_LOOKAHEAD
    assert TRAIN_LOOKAHEAD == audio_net.LOOKAHEAD_S


def test_committed_weights_close_mouth_in_silence():
    m = load_default()
    x = torch.full((1, 1, 80, 16), SILENCE_VALUE)
    with torch.no_grad():
        y = m(x)[0]
    assert float(y[0] * (1 - y[2])) < 0.1


@pytest.mark.skipif(shutil.which("flite") is None, reason="flite not installed")
def test_committed_weights_follow_held_out_speech_at_any_level():
    """A held-out voice (slt): opening tracks the phone targets, also 25 dB quieter."""
    from export.evaluate_audio import FPS, net_track, score
    from export.speech_corpus import VOICES, synth_flite
    from engines.mel import SAMPLE_RATE
    from engines.windows import frame_count

    slt = next(v for v in VOICES if v.name == "flite_slt")
    with tempfile.TemporaryDirectory() as d:
        wav, seg = synth_flite(slt, "Maybe the big brown cow will jump over the moon, said Bob", Path(d))
    wav = np.concatenate([np.zeros(8000, np.float32), wav / np.abs(wav).max() * 0.5])
    seg = type(seg)(seg.start + 0.5, seg.end + 0.5, seg.phone, seg.phoneset)
    m = load_default()
    n = frame_count(wav.size, SAMPLE_RATE, FPS)
    loud = score(net_track(m, wav, n, audio_net.LOOKAHEAD_S), seg)
    quiet = score(net_track(m, wav * 10 ** (-25 / 20), n, audio_net.LOOKAHEAD_S), seg)
    assert loud["corr_speech"] > 0.5 and quiet["corr_speech"] > 0.5
    assert loud["closure_recall"] >= 0.5
    assert loud["silence_open"] < 0.1 and quiet["silence_open"] < 0.1


def test_wider_net_round_trips_through_its_checkpoint(tmp_path):
    torch.manual_seed(1)
    m = AudioToMouth((8, 16, 24, 32), 16).eval()
    path = audio_net.save(m, tmp_path / "w.pt")
    assert load_checkpoint(path)["arch"] == {"channels": [8, 16, 24, 32], "hidden": 16}
    back = load_default(path=path)
    x = torch.empty(3, 1, 80, 16).uniform_(-4, 4)
    with torch.no_grad():
        assert torch.equal(back(x), m(x))


def test_checkpoint_without_arch_loads_v2_sizes(tmp_path):
    ck = load_checkpoint()
    ck.pop("arch", None)
    ck["state_dict"] = AudioToMouth(audio_net.V2_CHANNELS, audio_net.V2_HIDDEN).state_dict()
    torch.save(ck, tmp_path / "old.pt")
    assert load_default(path=tmp_path / "old.pt").arch == {"channels": [16, 32, 48, 64], "hidden": 64}
