"""Streaming speech over the WebSocket into a presenter session, with a real aiortc client watching.

One server, one presenter client (decoding video), one WebSocket client (aiohttp) at 24 kHz:
malformed messages get error events; segment 1 is streamed and flushed (speech_started /
speech_ended with its played duration); segment 2 is sent as fast as the back-pressure events
allow, then cleared mid-sentence (interrupted, the mouth closes).  HTTP errors are JSON.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import numpy as np
import pytest
import soxr

from server_harness import connect, flite_speech, serving

SPEECH = "Good morning everyone. Today we will look at a wide open map of the whole bay area."
RATE = 24000
CHUNK_S = 0.1


def pcm16(x: np.ndarray) -> bytes:
    return (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


class Events:
    """Every JSON event of the socket, with its arrival time (monotonic)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.items: list[tuple[float, dict]] = []
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.items.append((time.monotonic(), msg.json()))

    def of(self, kind: str) -> list[dict]:
        return [e for _, e in self.items if e["type"] == kind]

    async def wait(self, kind: str, n: int = 1, timeout: float = 10.0) -> dict:
        end = time.monotonic() + timeout
        while len(self.of(kind)) < n:
            if time.monotonic() > end:
                raise AssertionError(f"no {kind!r} event #{n} within {timeout} s; got {[e for _, e in self.items]}")
            await asyncio.sleep(0.01)
        return self.of(kind)[n - 1]

    def time_of(self, kind: str, n: int = 1) -> float:
        return [t for t, e in self.items if e["type"] == kind][n - 1]


@pytest.fixture(scope="module")
def run(engine, tmp_path_factory) -> dict:
    wav = tmp_path_factory.mktemp("stream") / "speech.wav"
    speech16 = flite_speech(SPEECH, wav)
    speech = soxr.resample(speech16, 16000, RATE).astype(np.float32)
    chunk = int(CHUNK_S * RATE)
    from export.avatar import ensure_default_avatar

    box = tuple(int(v) for v in ensure_default_avatar().mouth_boxes[0])

    async def go() -> dict:
        out: dict = {"speech_s": speech.size / RATE}
        async with serving(engine) as (base, _):
            async with aiohttp.ClientSession() as http:
                client = await connect(base, http, mouth_box=box)
                mic_client = await connect(base, http, mic=speech16, keep_frames=False)
                api = f"{base}/api/sessions/{client.session_id}"

                async def status(path: str) -> tuple[int, str, dict]:
                    async with http.get(base + path) as r:
                        return r.status, r.headers.get("Content-Type", ""), await r.json()

                out["unknown"] = await status("/api/sessions/feedbeef/stream")
                out["mic"] = await status(f"/api/sessions/{mic_client.session_id}/stream?rate=16000")
                out["bad_rate"] = await status(f"/api/sessions/{client.session_id}/stream?rate=44100")
                out["not_ws"] = await status(f"/api/sessions/{client.session_id}/stream")
                await asyncio.sleep(1.0)

                ws = await http.ws_connect(f"{api}/stream?rate={RATE}")
                ev = Events(ws)
                out["hello"] = await ev.wait("session")
                second = await http.get(f"{api}/stream?rate={RATE}", headers={
                    "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
                out["second"] = (second.status, await second.json())
                second.release()
                await ws.send_str("this is not json")
                await ws.send_str('{"type": "shout"}')
                await ws.send_bytes(b"\x01\x02\x03")
                await ws.send_str("[1, 2]")
                await ev.wait("error", 4)

                # segment 1: real-time-ish (2x), flushed
                t_first = time.monotonic()
                for i in range(0, speech.size, chunk):
                    await ws.send_bytes(pcm16(speech[i:i + chunk]))
                    await asyncio.sleep(CHUNK_S / 2)
                await ws.send_str('{"type": "flush"}')
                started = await ev.wait("speech_started")
                out["t_first"], out["t_started"] = t_first, ev.time_of("speech_started")
                await asyncio.sleep(1.5)
                async with http.get(api) as r:
                    out["during1"] = await r.json()
                out["ended1"] = await ev.wait("speech_ended", timeout=10)
                out["started1"] = started

                # segment 2: as fast as back-pressure allows, then cleared mid-sentence
                long = np.concatenate([speech, speech])
                sent = 0
                t_seg2 = time.monotonic()
                while sent < long.size:
                    bp, rs = len(ev.of("backpressure")), len(ev.of("resume"))
                    if bp > rs:  # paused: wait for resume
                        await asyncio.sleep(0.02)
                        if time.monotonic() - t_seg2 > 3.5:
                            break
                        continue
                    await ws.send_bytes(pcm16(long[sent:sent + chunk]))
                    sent += chunk
                    await asyncio.sleep(0.005)
                    if time.monotonic() - t_seg2 > 3.5:
                        break
                out["sent2_s"] = sent / RATE
                await ev.wait("speech_started", 2)
                async with http.get(api) as r:
                    out["before_clear"] = await r.json()
                t_clear = out["t_clear"] = time.monotonic()
                await ws.send_str('{"type": "clear"}')
                out["interrupted"] = await ev.wait("interrupted")
                out["t_interrupted"] = ev.time_of("interrupted")
                frames_at_clear = out["before_clear"]["frames_rendered"]
                await asyncio.sleep(max(0.0, t_clear + 0.3 - time.monotonic()))
                async with http.get(api) as r:
                    out["at_300ms"] = await r.json()
                await asyncio.sleep(0.7)
                async with http.get(api) as r:
                    out["after"] = await r.json()
                out["frames_at_clear"] = frames_at_clear
                async with http.get(f"{base}/healthz") as r:
                    out["health"] = await r.json()
                out["mic_frames"] = len(mic_client.video)
                await ws.close()
                await ev.task
                out["events"] = [e for _, e in ev.items]
                out["client"] = client
                await mic_client.close()
                await client.close()
        return out

    return asyncio.run(go())


def test_http_errors_are_json(run: dict) -> None:
    assert run["unknown"][0] == 404 and "error" in run["unknown"][2]
    assert run["mic"][0] == 409 and "microphone" in run["mic"][2]["error"]
    assert run["bad_rate"][0] == 400 and "rate" in run["bad_rate"][2]["error"]
    assert run["not_ws"][0] == 400 and "WebSocket" in run["not_ws"][2]["error"]
    assert all(r[1].startswith("application/json") for r in (run["unknown"], run["mic"], run["bad_rate"]))
    assert run["second"][0] == 409, run["second"]


def test_malformed_messages_get_error_events(run: dict) -> None:
    events = run["events"]
    assert events[0]["type"] == "session" and events[0]["rate"] == RATE
    errors = [e["error"] for e in events[1:5]]
    assert [e["type"] for e in events[1:5]] == ["error"] * 4, events[:6]
    assert "JSON" in errors[0] and "unknown control" in errors[1] and "16-bit" in errors[2]
    assert "unknown control" in errors[3]
    # ... and nothing broke: the streams, the other session and the server went on
    assert run["health"]["sessions"] == 2 and run["mic_frames"] > 100


def test_streamed_speech_moves_the_mouth(run: dict) -> None:
    assert max(run["during1"]["openings"][-30:]) > 0.3


def test_segment_events_in_order_with_durations(run: dict) -> None:
    kinds = [e["type"] for e in run["events"] if e["type"] in ("speech_started", "speech_ended", "interrupted")]
    assert kinds == ["speech_started", "speech_ended", "speech_started", "interrupted"], kinds
    s1, e1 = run["started1"], run["ended1"]
    assert s1["segment"] == e1["segment"] == 1
    assert abs(e1["audio_s"] - run["speech_s"]) < 0.05, (e1, run["speech_s"])
    # streamed at 2x real time: no underrun, so the played span is the audio itself
    assert abs(e1["played_s"] - e1["audio_s"]) < 0.05, e1
    assert abs(e1["wall_s"] - e1["played_s"]) < 0.2, e1
    assert 0.0 < s1["latency_s"] < 0.3, s1
    assert e1["at_s"] > s1["at_s"]


def test_backpressure_then_resume(run: dict) -> None:
    bp = [e for e in run["events"] if e["type"] == "backpressure"]
    assert bp and bp[0]["queued_s"] >= run["hello"]["max_buffer_s"], run["events"]
    assert bp[0]["queued_s"] < run["hello"]["max_buffer_s"] + 0.2  # bounded: one chunk past the cap
    assert any(e["type"] == "resume" for e in run["events"])
    assert not any("dropped" in e.get("error", "") or e.get("dropped_s") for e in run["events"]
                   if e["type"] in ("error", "resume")), "a sender that obeys the events loses nothing"


def test_clear_interrupts_and_closes_the_mouth(run: dict) -> None:
    it = run["interrupted"]
    assert it["segment"] == 2
    assert 0.0 < it["played_s"] < run["sent2_s"] and it["dropped_s"] > 0.5, it
    assert run["t_interrupted"] - run["t_clear"] < 0.15
    made = run["at_300ms"]["frames_rendered"] - run["frames_at_clear"]
    new = run["at_300ms"]["openings"][-max(made - 3, 2):]
    assert new[-1] < 0.05 and new[-2] < 0.05, new
    assert max(run["after"]["openings"][-20:]) < 0.05
    assert run["after"]["queued_s"] == 0.0


def test_decoded_mouth_rests_after_clear(run: dict) -> None:
    video, t_clear = run["client"].video, run["t_clear"]
    motion = [(t, np.abs(f.astype(np.float32) - g.astype(np.float32)).mean())
              for (_, g), (t, f) in zip(video, video[1:])]
    speaking = np.array([m for t, m in motion if t_clear - 1.0 < t < t_clear])
    rest = np.array([m for t, m in motion if t_clear + 0.3 < t < t_clear + 0.9])
    assert len(rest) > 8
    assert np.percentile(speaking, 75) > 3 * max(np.percentile(rest, 90), 0.5), (speaking, rest)

