"""Bad input gets its 4xx/503 JSON, never a stack trace, while a live session keeps streaming."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from server_harness import connect, serving


@pytest.fixture(scope="module")
def replies(engine) -> dict:
    async def go() -> dict:
        out: dict = {}
        async with serving(engine, max_sessions=2, max_speech_bytes=100_000) as (base, _):
            async with aiohttp.ClientSession() as http:
                live = await connect(base, http, keep_frames=False)
                await asyncio.sleep(0.8)
                t_start = asyncio.get_running_loop().time()
                frames_before = len(live.video)

                async def ask(name: str, method: str, path: str, **kw) -> None:
                    async with http.request(method, base + path, **kw) as r:
                        out[name] = (r.status, r.headers.get("Content-Type", ""), await r.text(),
                                     r.headers.get("Retry-After"))

                good_sdp = live.pc.localDescription.sdp
                api = f"/api/sessions/{live.session_id}"
                await ask("bad_sdp", "POST", "/offer", json={"sdp": "v=0\r\nthis is not sdp\r\n", "type": "offer"})
                await ask("bad_json", "POST", "/offer", data=b"{not json", headers={"Content-Type": "application/json"})
                await ask("wrong_shape", "POST", "/offer", json={"sdp": 5, "type": "answer"})
                await ask("wrong_type", "POST", "/offer", data=b"sdp=x", headers={"Content-Type": "text/plain"})
                await ask("huge_offer", "POST", "/offer", data=b"x" * 200_000,
                          headers={"Content-Type": "application/json"})
                await ask("no_avatar", "POST", "/offer", json={"sdp": good_sdp, "type": "offer", "avatar": "nobody"})
                await ask("evil_avatar", "POST", "/offer", json={"sdp": good_sdp, "type": "offer", "avatar": "../etc"})
                await ask("no_session", "POST", "/api/sessions/feedbeef/speak", data=b"RIFF",
                          headers={"Content-Type": "audio/wav"})
                await ask("no_session_del", "DELETE", "/api/sessions/feedbeef")
                await ask("speak_type", "POST", f"{api}/speak", data=b"hello", headers={"Content-Type": "text/plain"})
                await ask("speak_huge", "POST", f"{api}/speak", data=b"\0" * 200_000,
                          headers={"Content-Type": "audio/wav"})
                await ask("speak_junk", "POST", f"{api}/speak", data=b"\1\2\3" * 100,
                          headers={"Content-Type": "audio/wav"})
                await ask("wrong_method", "PUT", "/offer")
                second = await connect(base, http, keep_frames=False)  # the 2nd of max 2
                await ask("full", "POST", "/offer", json={"sdp": good_sdp, "type": "offer"})
                await ask("health", "GET", "/healthz")
                await ask("index", "GET", "/")
                await asyncio.sleep(0.6)
                out["fps_during"] = (len(live.video) - frames_before) / (asyncio.get_running_loop().time() - t_start)
                out["live_state"] = live.pc.connectionState
                await second.close()
                await live.close()
        return out

    return asyncio.run(go())


@pytest.mark.parametrize("name,status", [
    ("bad_sdp", 400), ("bad_json", 400), ("wrong_shape", 400), ("wrong_type", 415), ("huge_offer", 413),
    ("no_avatar", 404), ("evil_avatar", 404), ("no_session", 404), ("no_session_del", 404),
    ("speak_type", 415), ("speak_huge", 413), ("speak_junk", 400), ("wrong_method", 405), ("full", 503),
])
def test_error_is_json(replies: dict, name: str, status: int) -> None:
    got, ctype, body, _ = replies[name]
    assert got == status, (name, got, body)
    assert ctype.startswith("application/json"), ctype
    import json

    message = json.loads(body)["error"]
    assert message and "Traceback" not in message


def test_full_server_says_when_to_retry(replies: dict) -> None:
    assert replies["full"][3] == "5"


def test_live_session_kept_streaming(replies: dict) -> None:
    assert replies["live_state"] == "connected"
    assert replies["fps_during"] > 20, replies["fps_during"]  # video kept coming while errors were answered


def test_health_and_index(replies: dict) -> None:
    assert replies["health"][0] == 200 and '"status": "ok"' in replies["health"][2]
    assert replies["index"][0] == 200 and "<html" in replies["index"][2].lower() or "<!doctype" in replies["index"][2].lower()
