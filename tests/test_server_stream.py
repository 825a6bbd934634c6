"""End to end over real WebRTC on 127.0.0.1: an aiortc client speaks into its mic and watches.

One ~8 s call (1 s silence, a flite sentence, 2.5 s silence).  Checks: >= 24 fps of decoded
video, the speech coming back as audio, the mouth moving during speech and closed in silence —
both in the server's mouth parameters and in the pixels of the mouth box on decoded frames —
and the low-latency audio jitter buffer in the server's receiver.
"""

from __future__ import annotations

import asyncio

import aiohttp
import numpy as np
import pytest

from realtime import low_latency
from server_harness import connect, flite_speech, serving

SPEECH = "Hello there. Why would a wide blue map be here? Oh, I am amazed, what a day."
LEAD_S, TAIL_S = 1.0, 2.5


@pytest.fixture(scope="module")
def mouth_box() -> tuple[int, int, int, int]:
    from export.avatar import ensure_default_avatar

    return tuple(int(v) for v in ensure_default_avatar().mouth_boxes[0])


@pytest.fixture(scope="module")
def call(engine, mouth_box, tmp_path_factory) -> dict:
    speech = flite_speech(SPEECH, tmp_path_factory.mktemp("mic") / "speech.wav")
    mic = np.concatenate([np.zeros(int(LEAD_S * 16000), np.float32), speech,
                          np.zeros(int(TAIL_S * 16000), np.float32)])

    async def run() -> dict:
        async with serving(engine) as (base, app):
            async with aiohttp.ClientSession() as http:
                client = await connect(base, http, mic=mic, mouth_box=mouth_box)
                await asyncio.sleep(mic.size / 16000 + 0.6)
                async with http.get(f"{base}/api/sessions/{client.session_id}") as r:
                    summary = await r.json()
                async with http.get(f"{base}/metrics") as r:
                    metrics = await r.text()
                prefetch = {b.prefetch_frames for b in low_latency.live_audio_buffers()}
                encoder = {type(e).__name__ for e in low_latency.live_encoders()}
                await client.close()
        return {"client": client, "summary": summary, "metrics": metrics, "prefetch": prefetch, "encoder": encoder,
                "speech_s": speech.size / 16000}

    return asyncio.run(run())


def _speech_interval(call: dict) -> tuple[float, float]:
    """Speech on the client's mic clock, in monotonic seconds."""
    t0 = call["client"].mic.t0
    return t0 + LEAD_S, t0 + LEAD_S + call["speech_s"]


def test_video_arrives_at_25_fps(call: dict) -> None:
    ts = np.array([t for t, _ in call["client"].video])
    assert len(ts) > 100
    steady = ts[ts > ts[0] + 1.0]
    fps = (len(steady) - 1) / (steady[-1] - steady[0])
    assert fps >= 24.0, fps
    pts = np.diff(call["client"].video_pts)
    assert np.all(pts % 3600 == 0) and np.median(pts) == 3600


def test_speech_comes_back_as_audio(call: dict) -> None:
    audio = call["client"].audio
    assert len(audio) > 40 * 5  # ~50 frames/s for the call
    s0, s1 = _speech_interval(call)
    rms_speech = [np.sqrt(np.mean(a.astype(np.float64) ** 2)) for t, a in audio if s0 + 0.3 < t < s1]
    rms_quiet = [np.sqrt(np.mean(a.astype(np.float64) ** 2)) for t, a in audio if t > s1 + 1.0]
    assert np.percentile(rms_speech, 75) > 500, "returned audio carries no speech"
    assert np.median(rms_quiet) < 50, "returned audio is not silent after the speech"


def test_mouth_params_follow_speech(call: dict) -> None:
    openings = np.array(call["summary"]["openings"])
    n_tail = int((TAIL_S - 1.2) * 25)  # frames surely after the speech ended (the call ends 0.6 s late)
    assert openings.max() > 0.3, "the mouth never opened during speech"
    assert np.all(openings[-n_tail:] < 0.05), openings[-n_tail:]
    assert np.all(openings[:10] < 0.05), "mouth open before any speech"


def test_mouth_pixels_move_in_speech_and_rest_in_silence(call: dict) -> None:
    """Frame-to-frame change in the mouth box: the idle motion is slow, articulation is not."""
    video = call["client"].video
    s0, s1 = _speech_interval(call)
    motion = [(t, np.abs(f.astype(np.float32) - g.astype(np.float32)).mean())
              for (_, g), (t, f) in zip(video, video[1:])]
    speaking = np.array([m for t, m in motion if s0 + 0.2 < t < s1])
    quiet = np.array([m for t, m in motion if t > s1 + 0.6])
    assert len(speaking) > 25 and len(quiet) > 10
    assert np.percentile(speaking, 75) > 3 * max(np.percentile(quiet, 75), 0.5), (speaking, quiet)


def test_metrics_and_latency(call: dict) -> None:
    text = call["metrics"]
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
              if line and not line.startswith("#")}
    assert values["lipstream_frames_sent_total"] > 150
    assert 'lipstream_engine_info{engine="onnxruntime"' in text
    count = values["lipstream_audio_to_frame_seconds_count"]
    mean = values["lipstream_audio_to_frame_seconds_sum"] / count
    assert count > 100 and 0.02 < mean < 0.2, mean  # lookahead + mel context + tick wait + render
    # the same latency by stage, from the server's own timestamps
    for stage in ("jitter_buffer", "lookahead", "tick_wait", "inference", "composite", "worker_other",
                  "send_wait", "encode"):
        assert values[f'lipstream_latency_stage_seconds_count{{stage="{stage}"}}'] > 50, stage
    n = values['lipstream_latency_stage_seconds_count{stage="lookahead"}']
    lookahead = values['lipstream_latency_stage_seconds_sum{stage="lookahead"}'] / n
    # the model's 40 ms lookahead + the mel's 12.5 ms right context, give or take a 20 ms packet
    assert 0.03 < lookahead < 0.09, lookahead


def test_server_audio_jitter_buffer_is_low_latency(call: dict) -> None:
    assert call["prefetch"] == {1}


def test_h264_and_vp8_are_negotiated_as_asked(engine, call) -> None:
    """``--codec h264`` gets the (damped) H.264 encoder; the default call above got VP8."""
    from realtime.low_latency import DampedH264Encoder

    async def run() -> tuple[int, str]:
        async with serving(engine, codec="h264") as (base, app):
            async with aiohttp.ClientSession() as http:
                client = await connect(base, http, keep_frames=False)
                for _ in range(60):
                    if len(client.video) >= 10:
                        break
                    await asyncio.sleep(0.05)
                encoders = {type(e).__name__ for e in low_latency.live_encoders()}
                await client.close()
        return len(client.video), encoders

    frames, encoders = asyncio.run(run())
    assert frames >= 10 and DampedH264Encoder.__name__ in encoders
    assert call["encoder"] == {"DampedVp8Encoder"}
