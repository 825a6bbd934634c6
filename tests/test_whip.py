"""WHIP ingest + WHEP egress with aiortc clients speaking plain WHIP/WHEP (SDP over HTTP, no JSON).

A publisher sends a flite sentence as its microphone (plus a camera track, which the answer must
refuse: ingest is audio only); a viewer receives the avatar of that ingest over WHEP; the mouth
moves with the published speech and the speech comes back; DELETE on the WHIP Location ends it
all.  Bad requests get their 4xx JSON.
"""

from __future__ import annotations

import asyncio

import aiohttp
import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription, VideoStreamTrack

from realtime.ice import peer_configuration
from server_harness import WavMicTrack, flite_speech, serving

SPEECH = "Good morning everyone. Today we will look at a wide open map of the whole bay area."
SDP = {"Content-Type": "application/sdp"}


async def whip_publish(http: aiohttp.ClientSession, url: str, speech: np.ndarray):  # noqa: ANN201
    pc = RTCPeerConnection(configuration=peer_configuration())
    pc.addTransceiver(WavMicTrack(speech), direction="sendonly")
    pc.addTransceiver(VideoStreamTrack(), direction="sendonly")  # a camera, as OBS would send
    await pc.setLocalDescription(await pc.createOffer())  # candidates gathered: no trickle
    async with http.post(url, data=pc.localDescription.sdp, headers=SDP) as r:
        reply = (r.status, r.headers.get("Content-Type"), r.headers.get("Location"), await r.text())
    if reply[0] == 201:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=reply[3], type="answer"))
    return pc, reply


async def whep_view(http: aiohttp.ClientSession, url: str, video: list, audio: list):  # noqa: ANN201
    pc = RTCPeerConnection(configuration=peer_configuration())
    pc.addTransceiver("audio", direction="recvonly")
    pc.addTransceiver("video", direction="recvonly")
    tasks: list[asyncio.Task] = []

    async def consume(track) -> None:  # noqa: ANN001
        from aiortc.mediastreams import MediaStreamError

        loop = asyncio.get_running_loop()
        try:
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    video.append((loop.time(), frame.to_ndarray(format="rgb24")))
                else:
                    pcm = frame.to_ndarray().reshape(-1)
                    audio.append((loop.time(), float(np.sqrt(np.mean((pcm / 32768.0) ** 2)))))
        except MediaStreamError:
            pass

    @pc.on("track")
    def on_track(track) -> None:  # noqa: ANN001
        tasks.append(asyncio.ensure_future(consume(track)))

    await pc.setLocalDescription(await pc.createOffer())
    async with http.post(url, data=pc.localDescription.sdp, headers=SDP) as r:
        reply = (r.status, r.headers.get("Content-Type"), r.headers.get("Location"), await r.text())
    if reply[0] == 201:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=reply[3], type="answer"))
    return pc, reply, tasks


@pytest.fixture(scope="module")
def run(engine, tmp_path_factory) -> dict:
    speech = flite_speech(SPEECH, tmp_path_factory.mktemp("whip") / "speech.wav")
    speech = np.concatenate([np.zeros(16000, np.float32), speech])  # 1 s of quiet first: the mouth rests
    from export.avatar import ensure_default_avatar

    x0, y0, x1, y1 = (int(v) for v in ensure_default_avatar().mouth_boxes[0])

    async def go() -> dict:
        out: dict = {}
        async with serving(engine) as (base, _), aiohttp.ClientSession() as http:
            async def ask(name: str, method: str, path: str, **kw) -> None:
                async with http.request(method, base + path, **kw) as r:
                    out[name] = (r.status, r.headers.get("Content-Type", ""), await r.text())

            await ask("whep_nothing", "POST", "/whep", data="v=0\r\n", headers=SDP)
            await ask("wrong_type", "POST", "/whip", data="v=0\r\n", headers={"Content-Type": "application/json"})
            await ask("bad_sdp", "POST", "/whip", data="hello", headers=SDP)
            await ask("no_audio", "POST", "/whip", data="v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
                                                        "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n", headers=SDP)
            await ask("delete_unknown", "DELETE", "/whip/feedbeef")
            await ask("whep_unknown", "POST", "/whep/feedbeef", data="v=0\r\n", headers=SDP)

            pub, out["whip"] = await whip_publish(http, f"{base}/whip", speech)
            sid = out["whip"][2].rsplit("/", 1)[-1]
            out["answer_media"] = [ln for ln in pub.remoteDescription.sdp.splitlines()
                                   if ln.startswith("m=") or ln in ("a=recvonly", "a=inactive", "a=sendrecv")]
            await ask("patch", "PATCH", out["whip"][2], data="a=candidate", headers={
                "Content-Type": "application/trickle-ice-sdpfrag"})
            video, audio = [], []
            viewer, out["whep"], tasks = await whep_view(http, f"{base}/whep/{sid}", video, audio)
            await asyncio.sleep(1.0 + speech.size / 16000)
            async with http.get(f"{base}/api/sessions/{sid}") as r:
                out["summary"] = await r.json()
            out["pub_state"], out["viewer_state"] = pub.connectionState, viewer.connectionState
            out["frames"] = len(video)
            async with http.delete(base + out["whip"][2]) as r:
                out["deleted"] = (r.status, await r.json())
            await asyncio.sleep(1.0)
            out["viewer_after"] = viewer.connectionState
            out["frames_after"] = len(video)
            async with http.get(f"{base}/api/sessions/{sid}") as r:
                out["gone"] = r.status
            await ask("delete_again", "DELETE", out["whip"][2])
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await viewer.close()
            await pub.close()
        out["video"], out["audio"], out["box"] = video, audio, (x0, y0, x1, y1)
        return out

    return asyncio.run(go())


def test_whip_answers_201_with_location_and_sdp(run: dict) -> None:
    status, ctype, location, sdp = run["whip"]
    assert status == 201 and ctype == "application/sdp" and location.startswith("/whip/")
    assert sdp.startswith("v=0") and "a=candidate" in sdp and "a=end-of-candidates" in sdp  # gathered
    media = run["answer_media"]
    assert media[0].startswith("m=audio") and media[1] == "a=recvonly", media
    assert media[2].startswith("m=video") and media[3] == "a=inactive", media  # ingest is audio only


def test_whep_streams_the_ingests_avatar(run: dict) -> None:
    status, ctype, location, sdp = run["whep"]
    assert status == 201 and ctype == "application/sdp" and location.startswith("/whep/")
    assert run["pub_state"] == "connected" and run["viewer_state"] == "connected"
    seconds = run["summary"]["timeline_s"]
    assert run["frames"] > 20 * (seconds - 1.0), (run["frames"], seconds)
    assert run["summary"]["mic"] is True and run["summary"]["mic_s"] > 3.0
    assert max(run["summary"]["openings"]) > 0.3  # the published speech moved the mouth


def test_decoded_mouth_moves_and_speech_comes_back(run: dict) -> None:
    x0, y0, x1, y1 = run["box"]
    crops = [(t, f[y0:y1, x0:x1].astype(np.float32)) for t, f in run["video"]]
    motion = np.array([np.abs(b - a).mean() for (_, a), (_, b) in zip(crops, crops[1:])])
    assert np.percentile(motion, 95) > 3 * max(np.percentile(motion[:15], 50), 0.3), motion[:20]
    levels = np.array([v for _, v in run["audio"]])
    assert levels.max() > 0.02 and np.median(levels[:20]) < 0.01  # quiet first, then the speech


def test_delete_ends_ingest_and_viewer(run: dict) -> None:
    assert run["deleted"][0] == 200 and run["deleted"][1]["closed"] is True
    assert run["gone"] == 404
    assert run["viewer_after"] in ("closed", "failed")
    assert run["delete_again"][0] == 404


def test_errors_are_json(run: dict) -> None:
    expected = {"whep_nothing": 404, "wrong_type": 415, "bad_sdp": 400, "no_audio": 400,
                "delete_unknown": 404, "whep_unknown": 404, "patch": 405, "delete_again": 404}
    for name, code in expected.items():
        status, ctype, body = run[name]
        assert status == code and ctype.startswith("application/json") and '"error"' in body, (name, run[name])
