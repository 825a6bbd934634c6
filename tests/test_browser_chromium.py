"""The browser client in real headless Chromium, against a real server on 127.0.0.1.

Chromium's fake microphone plays a looping flite sentence; the page is driven like a user (click
Start).  Checks: the call connects over loopback ICE candidates, the page decodes >= 24 fps for
10 s (from its own ``getStats`` readings), the returned audio arrives and is not silent, and the
server heard speech (mic audio received, the mouth opened).  Then a presenter-mode call (no mic)
speaks a file uploaded through the page, and an unknown avatar shows the server's JSON error in
words.

Needs Debian's ``chromium`` and the ``playwright`` Python package (never ``playwright install``:
the browser is the system one).  ``LIPSTREAM_SCREENSHOT=/path.png`` saves a screenshot of the
running page.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from server_harness import chromium_fake_mic, serving

from benchmarks.bench_glass import CHROMIUM, CHROMIUM_FLAGS  # DESIGN.md's flags

SPEECH = "Hello there. Why would a wide blue map be here? Oh, I am amazed, what a day."
MEASURE_S = 10.0

playwright_api = pytest.importorskip("playwright.async_api",
                                     reason="needs the playwright package (pip install playwright)")
pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(),
                                reason="needs Debian chromium at /usr/bin/chromium (apt-get install chromium)")


@pytest.fixture(scope="module")
def fake_mic(tmp_path_factory) -> Path:
    """0.5 s of silence, speech, 1.5 s of silence: 16-bit mono PCM WAV at 48 kHz; Chromium loops it."""
    return chromium_fake_mic(SPEECH, tmp_path_factory.mktemp("mic"), 0.5, 1.5)


async def _wait_for(page, expression: str, timeout_s: float) -> None:
    await page.wait_for_function(expression, timeout=timeout_s * 1000, polling=100)


@pytest.fixture(scope="module")
def browser_call(engine, fake_mic) -> dict:
    """A ~12 s mic call, then a presenter call; the pages' stats and the server's view of both.

    Playwright's ``launch`` gives every browser a fresh temporary profile (user-data-dir).
    """

    async def run() -> dict:
        async with serving(engine) as (base, _app), aiohttp.ClientSession() as http:
            async with playwright_api.async_playwright() as pw:
                launch = pw.chromium.launch
                browser = await launch(executable_path=str(CHROMIUM), headless=True,
                                       args=[*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={fake_mic}"])
                try:
                    result = await _mic_call(browser, base, http)
                finally:
                    await browser.close()
                # Without the fake permission UI a page that never asked for the mic has no media
                # permission, so Chromium hides its address behind an mDNS ``.local`` name, as it
                # does for a real user in presenter mode.
                browser = await launch(executable_path=str(CHROMIUM), headless=True,
                                       args=[f for f in CHROMIUM_FLAGS if f != "--use-fake-ui-for-media-stream"])
                try:
                    result["presenter"] = await _presenter_call(browser, base, http, fake_mic)
                finally:
                    await browser.close()
                return result

    return asyncio.run(run())


def _candidates(offer_json: str) -> list[str]:
    """The ICE candidate lines of a posted offer (the log keeps these, not the whole SDP)."""
    return [line for line in json.loads(offer_json)["sdp"].splitlines() if line.startswith("a=candidate")]


async def _open_page(browser, base: str, log: list[str]):  # noqa: ANN001, ANN202 - playwright objects
    """A page of the client, logging what goes wrong (console, page errors, HTTP errors, offers)."""
    page = await browser.new_page(viewport={"width": 760, "height": 760})
    page.on("console", lambda m: log.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: log.append(f"pageerror: {e}"))
    page.on("response",
            lambda r: log.append(f"http {r.status} {r.request.method} {r.url}") if r.status >= 400 else None)
    page.on("request", lambda r: log.append(f"offer {_candidates(r.post_data)}") if r.url.endswith("/offer") else None)
    await page.goto(f"{base}/")
    await _wait_for(page, "document.querySelectorAll('#avatars option').length > 0", 5)
    return page


async def _start(page, log: list[str]) -> str:  # noqa: ANN001
    """Click Start and wait for the call to connect; returns the session id."""
    await page.click("#start")
    try:
        await _wait_for(page, "window.lipstream.phase === 'connected' || window.lipstream.error !== null", 15)
    except playwright_api.TimeoutError:
        pass
    if await page.evaluate("window.lipstream.phase") != "connected":
        status = await page.text_content("#status")
        raise AssertionError(f"never connected; status {status!r}; log {log}")
    return await page.evaluate("window.lipstream.sessionId")


async def _mic_call(browser, base: str, http: aiohttp.ClientSession) -> dict:  # noqa: ANN001
    """Fake mic -> server -> page for 11 s; Stop; then Start with an unknown avatar."""
    log: list[str] = []
    page = await _open_page(browser, base, log)
    sid = await _start(page, log)
    await asyncio.sleep(1.0 + MEASURE_S)  # 1 s to settle, then the measured interval
    history = await page.evaluate("window.lipstream.history")
    video = await page.evaluate("""() => { const v = document.getElementById('video');
        return {w: v.videoWidth, h: v.videoHeight, paused: v.paused, muted: v.muted, t: v.currentTime,
                tracks: v.srcObject ? v.srcObject.getTracks().map(t => t.kind + ':' + t.readyState) : []}; }""")
    async with http.get(f"{base}/api/sessions/{sid}") as r:
        summary = await r.json()
    shot = os.environ.get("LIPSTREAM_SCREENSHOT")
    if shot:
        await page.screenshot(path=shot)
    status_connected = await page.text_content("#status")

    await page.click("#stop")
    for _ in range(40):
        async with http.get(f"{base}/healthz") as r:
            sessions_after_stop = (await r.json())["sessions"]
        if sessions_after_stop == 0:
            break
        await asyncio.sleep(0.05)

    await page.fill("#avatar", "no-such-avatar")
    await page.click("#start")
    await _wait_for(page, "window.lipstream.error !== null", 10)
    error_text = await page.text_content("#status")
    return {"history": history, "video": video, "summary": summary, "status_connected": status_connected,
            "sessions_after_stop": sessions_after_stop, "error_text": error_text, "log": log}


async def _presenter_call(browser, base: str, http: aiohttp.ClientSession, speech_file: Path) -> dict:  # noqa: ANN001
    """No microphone: upload a speech file with the page's Speak button; the mouth must move."""
    log: list[str] = []
    page = await _open_page(browser, base, log)
    await page.select_option("#mic", "none")
    sid = await _start(page, log)
    await page.set_input_files("#speech-file", str(speech_file))
    await page.click("#speak")
    await _wait_for(page, "document.getElementById('status').textContent.startsWith('Speaking')", 5)
    await asyncio.sleep(4.0)
    async with http.get(f"{base}/api/sessions/{sid}") as r:
        summary = await r.json()
    stats = await page.evaluate("window.lipstream.stats")
    status = await page.text_content("#status")
    await page.click("#stop")
    return {"summary": summary, "stats": stats, "status": status, "log": log}


def test_connects_over_loopback(browser_call: dict) -> None:
    last = browser_call["history"][-1]
    assert last["remoteCandidate"] == "127.0.0.1", last
    assert last["rtt"] is not None and last["rtt"] < 0.05, last
    assert "Connected" in browser_call["status_connected"]


def test_page_decodes_25_fps(browser_call: dict) -> None:
    hist = browser_call["history"]
    t_end = hist[-1]["t"]
    window = [h for h in hist if h["t"] >= t_end - MEASURE_S - 0.01]
    first, last = window[0], window[-1]
    assert last["t"] - first["t"] >= MEASURE_S - 1.1, (first, last)
    fps = (last["framesDecoded"] - first["framesDecoded"]) / (last["t"] - first["t"])
    assert fps >= 24.0, (fps, [h["fps"] for h in hist])
    assert last["width"] > 0 and browser_call["video"]["w"] == last["width"]
    assert not browser_call["video"]["paused"] and browser_call["video"]["t"] > MEASURE_S


def test_returned_audio_plays(browser_call: dict) -> None:
    hist = browser_call["history"]
    assert hist[-1]["audioSamples"] > 48000 * MEASURE_S * 0.9  # 48 kHz Opus decoded all along
    assert max(h["audioLevel"] or 0 for h in hist) > 0.02, "the returned audio is silent"
    assert "audio:live" in browser_call["video"]["tracks"] and not browser_call["video"]["muted"]


def test_server_heard_speech(browser_call: dict) -> None:
    """The fake mic's WAV reached the server: a wrong path plays near-silence and fails here."""
    summary = browser_call["summary"]
    assert summary["mic"] is True
    assert summary["mic_s"] > MEASURE_S * 0.9, summary["mic_s"]
    openings = np.array(summary["openings"])
    assert openings.max() > 0.3, "the mouth never opened: the server heard no speech"
    assert (openings < 0.05).mean() > 0.1, "the mouth never closed: the fake mic's silence did not arrive"
    assert summary["audio_to_frame_ms"] is not None and 20 < summary["audio_to_frame_ms"] < 300


def test_stats_overlay_and_stop(browser_call: dict) -> None:
    last = browser_call["history"][-1]
    assert last["serverLatency"] is not None and last["jitterVideo"] >= 0 and last["jitterAudio"] >= 0
    assert browser_call["sessions_after_stop"] == 0


def test_presenter_mode_speaks_uploaded_file(browser_call: dict) -> None:
    """No mic, mDNS host candidates in the offer: still connects via the server's loopback one."""
    call = browser_call["presenter"]
    offer = next(line for line in call["log"] if line.startswith("offer "))
    assert ".local" in offer, "expected Chromium to offer mDNS candidates without media permission"
    assert call["summary"]["mic"] is False and "Speaking" in call["status"], call["status"]
    duration = float(re.search(r"\(([\d.]+) s;", call["status"]).group(1))
    assert duration > 7.0, f"the server got part of the upload only: {call['status']}"
    assert call["stats"]["remoteCandidate"] == "127.0.0.1" and call["stats"]["framesDecoded"] > 50
    assert max(call["summary"]["openings"]) > 0.3, "the uploaded speech did not move the mouth"


def test_server_error_shown_in_words(browser_call: dict) -> None:
    assert "no prepared avatar 'no-such-avatar'" in browser_call["error_text"]
    errors = [line for line in browser_call["log"] + browser_call["presenter"]["log"] if line.startswith("pageerror")]
    assert not errors, errors
