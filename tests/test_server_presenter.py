"""Presenter mode over real WebRTC: no mic; speech pushed over HTTP, then interrupted.

The mouth must move while the pushed speech plays, and be closed within 200 ms of the
interrupt: checked on the server's rendered mouth parameters (the frames made after the
interrupt) and on the decoded video (the mouth box stops moving).
"""

from __future__ import annotations

import asyncio

import aiohttp
import numpy as np
import pytest

from server_harness import connect, flite_speech, serving, speak_then_interrupt

SPEECH = "Good morning everyone. Today we will look at a wide open map of the whole bay area."


@pytest.fixture(scope="module")
def run(engine, tmp_path_factory) -> dict:
    wav = tmp_path_factory.mktemp("presenter") / "speech.wav"
    flite_speech(SPEECH, wav)
    from export.avatar import ensure_default_avatar

    box = tuple(int(v) for v in ensure_default_avatar().mouth_boxes[0])

    async def go() -> dict:
        async with serving(engine) as (base, _):
            async with aiohttp.ClientSession() as http:
                client = await connect(base, http, mouth_box=box)
                api = f"{base}/api/sessions/{client.session_id}"
                steps = await speak_then_interrupt(http, api, wav.read_bytes())
                spoke, before, interrupted = steps["spoke"], steps["before"], steps["interrupted"]
                at_200ms, after, t_int = steps["at_200ms"], steps["after"], steps["t_int"]
                async with http.delete(api) as r:
                    deleted = (r.status, await r.json())
                async with http.get(api) as r:
                    gone = r.status
                await client.close()
        return locals()

    return asyncio.run(go())


def test_pushed_speech_moves_the_mouth(run: dict) -> None:
    assert run["spoke"]["duration_s"] > 2.0
    assert max(run["before"]["openings"][-40:]) > 0.3


def test_interrupt_closes_the_mouth_within_200ms(run: dict) -> None:
    made_since = run["at_200ms"]["frames_rendered"] - run["interrupted"]["frames_rendered"]
    assert made_since >= 2, "no frames rendered after the interrupt"
    new = run["at_200ms"]["openings"][-made_since:]
    assert new[-1] < 0.05 and new[-2] < 0.05, new
    assert run["at_200ms"]["queued_s"] == 0.0
    assert max(run["after"]["openings"][-20:]) < 0.05  # and it stays closed: the speech is gone


def test_decoded_mouth_rests_after_interrupt(run: dict) -> None:
    video, t_int = run["client"].video, run["t_int"]
    motion = [(t, np.abs(f.astype(np.float32) - g.astype(np.float32)).mean())
              for (_, g), (t, f) in zip(video, video[1:])]
    speaking = np.array([m for t, m in motion if t_int - 1.5 < t < t_int])
    rest = np.array([m for t, m in motion if t_int + 0.25 < t < t_int + 0.9])
    assert len(rest) > 8
    assert np.percentile(speaking, 75) > 3 * max(np.percentile(rest, 90), 0.5), (speaking, rest)


def test_delete_ends_the_session(run: dict) -> None:
    assert run["deleted"][0] == 200 and run["deleted"][1]["closed"] is True
    assert run["gone"] == 404
