"""WHIP ingest from GStreamer's ``webrtcbin`` (a WebRTC stack that is not aiortc: libnice ICE,
OpenSSL DTLS with an RSA certificate), driven by ``tests/gst_whip_client.py`` under the system
``python3`` (Debian's PyGObject).  It publishes a flite sentence (after 1 s of quiet) as Opus;
checks: 201 + Location + an SDP answer, ICE and DTLS come up (before ``realtime/whip.py`` took
the DTLS server role, this handshake failed: "no shared cipher"), the server heard the speech
(mic audio, the mouth opened), and the client's DELETE ends the session.

Needs Debian's gstreamer1.0-plugins-bad, gstreamer1.0-plugins-good, gstreamer1.0-nice,
gir1.2-gst-plugins-bad-1.0 and python3-gi (the Makefile's TEST_DEBS).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import wave
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from server_harness import flite_speech, serving

CLIENT = Path(__file__).resolve().with_name("gst_whip_client.py")
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin") or "/usr/bin/python3"
ELEMENTS = ("webrtcbin", "nicesrc", "dtlssrtpenc", "opusenc", "rtpopuspay", "wavparse", "clocksync")
SPEECH = "Good morning everyone. Today we will look at a wide open map of the whole bay area."
PUBLISH_S = 6.0


def _gstreamer_missing() -> str | None:
    probe = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstWebRTC', '1.0'); "
             "gi.require_version('GstSdp', '1.0'); from gi.repository import Gst, GstWebRTC, GstSdp; Gst.init(None); "
             f"print(' '.join(e for e in {ELEMENTS!r} if Gst.ElementFactory.find(e) is None))")
    try:
        r = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"no system python3 with PyGObject ({exc})"
    if r.returncode != 0:
        return "no PyGObject / GStreamer introspection data (apt-get install python3-gi gir1.2-gst-plugins-bad-1.0)"
    if r.stdout.strip():
        return (f"GStreamer elements missing: {r.stdout.strip()} (apt-get install gstreamer1.0-plugins-bad "
                "gstreamer1.0-plugins-good gstreamer1.0-nice)")
    return None


MISSING = _gstreamer_missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"needs Debian's GStreamer WebRTC: {MISSING}")


@pytest.fixture(scope="module")
def published(engine, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("gst")
    speech = np.concatenate([np.zeros(16000, np.float32), flite_speech(SPEECH, folder / "flite.wav")])
    wav = folder / "mic.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.clip(speech, -1, 1) * 32767).astype("<i2").tobytes())

    async def go() -> dict:
        out: dict = {"steps": []}
        async with serving(engine) as (base, _), aiohttp.ClientSession() as http:
            proc = await asyncio.create_subprocess_exec(
                SYSTEM_PYTHON, str(CLIENT), f"{base}/whip", str(wav), str(PUBLISH_S),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            try:
                while line := await asyncio.wait_for(proc.stdout.readline(), PUBLISH_S + 30):
                    step = json.loads(line)
                    out["steps"].append(step)
                    if step["step"] == "answer" and step["status"] == 201:
                        out["sid"] = step["location"].rsplit("/", 1)[-1]
                        await asyncio.sleep(PUBLISH_S - 0.8)  # just before the client's DELETE
                        async with http.get(f"{base}/api/sessions/{out['sid']}") as r:
                            out["summary"] = await r.json()
                out["rc"] = await proc.wait()
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            out["stderr"] = (await proc.stderr.read()).decode(errors="replace")[-2000:]
            if "sid" in out:
                async with http.get(f"{base}/api/sessions/{out['sid']}") as r:
                    out["gone"] = r.status
        return out

    return asyncio.run(go())


def _step(published: dict, name: str) -> list[dict]:
    return [s for s in published["steps"] if s["step"] == name]


def test_answer_is_201_with_location_and_sdp(published: dict) -> None:
    answer = _step(published, "answer")
    assert answer, published
    a = answer[0]
    assert a["status"] == 201 and a["content_type"] == "application/sdp" and a["location"].startswith("/whip/"), a
    assert a["candidates"] >= 1 and a["setup"] == ["a=setup:passive"], a  # we are the DTLS server


def test_gstreamer_media_reaches_the_avatar(published: dict) -> None:
    assert not _step(published, "error"), (published["steps"], published["stderr"])
    assert {"connected", "completed"} & {s["state"] for s in _step(published, "ice")}, published["steps"]
    summary = published["summary"]
    assert summary["mic"] is True and summary["mic_s"] > PUBLISH_S - 2.5, summary["mic_s"]
    openings = np.array(summary["openings"])
    assert openings.max() > 0.3, "the mouth never opened: no speech came through webrtcbin"


def test_client_delete_ends_the_session(published: dict) -> None:
    assert _step(published, "deleted") == [{"step": "deleted", "status": 200}], published["steps"]
    assert published["rc"] == 0 and published["gone"] == 404
