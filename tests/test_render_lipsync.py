"""Acceptance: render speech with known phone timings, then read the mouth back off the MP4.

The measurement is independent of the renderer: mediapipe's face mesh on the *decoded* H.264
frames, inner-lip gap (landmarks 13/14) over face height (10/152).  Speech comes from flite's
held-out ``slt`` voice, whose ``-psdur`` output gives the phone timings.
"""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import av
import numpy as np
import pytest

pytestmark = pytest.mark.slow

VOWELS = {"aa", "ae", "ah", "ao", "aw", "ax", "ay", "eh", "er", "ey", "ih", "iy", "ow", "oy", "uh", "uw"}
FPS = 25


def _flite(text: str, tmp: Path, name: str) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    wav_path = tmp / f"{name}.wav"
    out = subprocess.run(["flite", "-voice", "slt", "-psdur", "-t", text, "-o", str(wav_path)],
                         capture_output=True, text=True, check=True).stdout
    segs, start = [], 0.0
    for item in out.split():
        phone, end = item.rsplit(":", 1)
        segs.append((start, float(end), phone))
        start = float(end)
    with wave.open(str(wav_path)) as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
    from realtime.audio_io import resample

    return resample(pcm, rate), segs


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    if shutil.which("flite") is None:
        pytest.skip("flite is not installed (make test installs it: apt-get install flite)")
    tmp = tmp_path_factory.mktemp("lipsync")
    parts, segs, t = [], [], 0.0
    silence = np.zeros(16000, np.float32)
    for i, text in enumerate(["Bob ate a large apple at the park.", "Mama saw my pale blue car."]):
        parts.append(silence)
        segs.append((t, t + 1.0, "sil"))
        t += 1.0
        wav, s = _flite(text, tmp, f"s{i}")
        parts.append(wav)
        segs += [(t + a, t + b, p) for a, b, p in s]
        t += wav.size / 16000
    parts.append(silence)
    segs.append((t, t + 1.0, "sil"))
    audio = np.concatenate(parts)
    path = tmp / "speech.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes())
    return path, audio, segs


@pytest.fixture(scope="module")
def rendered(speech, tmp_path_factory):
    from engines.factory import create_engine
    from export.avatar import ensure_default_avatar
    from realtime.render import render

    path, _, _ = speech
    out = tmp_path_factory.mktemp("render") / "out.mp4"
    engine = create_engine("onnxruntime")
    avatar = ensure_default_avatar(tmp_path_factory.mktemp("avatars"))
    stats = render(path, avatar, engine, out)
    return out, stats


def _mouth_opening(mp4: Path) -> np.ndarray:
    import mediapipe as mp

    openings = []
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1,
                                         refine_landmarks=True) as mesh, av.open(str(mp4)) as c:
        for frame in c.decode(video=0):
            rgb = frame.to_ndarray(format="rgb24")
            res = mesh.process(rgb)
            assert res.multi_face_landmarks, "face mesh lost the face in the rendered video"
            lm = res.multi_face_landmarks[0].landmark
            h, w = rgb.shape[:2]
            p = lambda i: np.array([lm[i].x * w, lm[i].y * h])  # noqa: E731
            openings.append(np.linalg.norm(p(13) - p(14)) / np.linalg.norm(p(10) - p(152)))
    return np.array(openings)


def _labels(segs, n_frames: int) -> np.ndarray:
    """Per frame: 'v' vowel, 's' silence, 'c' anything else, at the frame's instant."""
    lab = np.full(n_frames, "c")
    t = np.arange(n_frames) / FPS
    for a, b, p in segs:
        sel = (t >= a) & (t < b)
        lab[sel] = "v" if p in VOWELS else ("s" if p in ("sil", "pau") else "c")
    return lab


def test_render_container(rendered, speech):
    out, stats = rendered
    _, audio, _ = speech
    with av.open(str(out)) as c:
        v = c.streams.video[0]
        a = c.streams.audio[0]
        assert v.codec_context.name == "h264"
        assert float(v.average_rate) == pytest.approx(25.0)
        assert a.codec_context.name == "aac"
        n = sum(1 for _ in c.decode(video=0))
    assert n == stats.frames == int(np.ceil(audio.size / 16000 * FPS))


def test_mouth_follows_speech(rendered, speech):
    out, _ = rendered
    _, audio, segs = speech
    opening = _mouth_opening(out)
    lab = _labels(segs, opening.size)
    t = np.arange(opening.size) / FPS
    # silence well away from speech (the net's window and the coarticulation reach ~200 ms)
    speech_spans = [(a, b) for a, b, p in segs if p not in ("sil", "pau")]
    far = np.array([all(ti < a - 0.25 or ti > b + 0.25 for a, b in speech_spans) for ti in t])
    silent = opening[(lab == "s") & far]
    vowel = opening[lab == "v"]
    assert silent.size > 20 and vowel.size > 10
    # closed in silence: nearly all silent frames sit at the rest gap
    rest = np.median(silent)
    assert np.percentile(silent, 95) - rest < 0.01, f"mouth moves in silence: {silent}"
    # open during vowels, clearly
    assert np.median(vowel) > rest + 0.03, f"vowel median {np.median(vowel):.3f} vs rest {rest:.3f}"
    assert np.mean(vowel > rest + 0.02) > 0.7

    # follows the audio: cross-correlate with the loudness envelope sampled at frame instants
    env = np.array([np.sqrt(np.mean(audio[max(0, int((ti - 0.02) * 16000)):int((ti + 0.02) * 16000)] ** 2) + 1e-12)
                    for ti in t])
    x = (opening - opening.mean()) / opening.std()
    y = (env - env.mean()) / env.std()
    lags = np.arange(-5, 6)
    cc = [np.mean(x[max(0, l):x.size + min(0, l)] * y[max(0, -l):y.size + min(0, -l)]) for l in lags]
    best = int(lags[int(np.argmax(cc))])
    assert abs(best) <= 1, f"mouth lags the audio by {best} frames (cc={np.round(cc, 2)})"
    assert max(cc) > 0.5
