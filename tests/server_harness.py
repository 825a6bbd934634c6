"""Test harness for the server: re-exports the benchmark suite's aiortc client and server runner,
plus speech synthesis for fixtures.  Not a test file itself; ``tests/test_server_*.py`` import it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.webrtc_client import MIC_CHUNK, MIC_RATE, Client, WavMicTrack, connect, serving  # noqa: F401


def flite_speech(text: str, out: Path) -> np.ndarray:
    """Synthesise ``text`` with flite's kal16 voice; returns float32 16 kHz samples."""
    import shutil
    import subprocess

    import pytest

    from realtime.audio_io import load_audio

    if not shutil.which("flite"):
        pytest.skip("needs flite (apt-get install flite)")
    subprocess.run(["flite", "-voice", "kal16", "-t", text, "-o", str(out)], check=True, capture_output=True,
                   timeout=60)
    return load_audio(out)


def chromium_fake_mic(text: str, folder: Path, lead_s: float, tail_s: float) -> Path:
    """A fake-microphone WAV for Chromium (48 kHz 16-bit mono; Chromium loops it): ``lead_s`` of
    silence, ``text`` spoken by flite, ``tail_s`` of silence, so the mouth must open and close."""
    from benchmarks.bench_glass import write_fake_mic_wav

    speech = flite_speech(text, folder / "flite.wav")
    out = folder / "fake_mic.wav"
    write_fake_mic_wav(out, np.concatenate([np.zeros(int(lead_s * 16000), np.float32), speech,
                                            np.zeros(int(tail_s * 16000), np.float32)]))
    return out


async def speak_then_interrupt(http, api: str, wav: bytes) -> dict:  # noqa: ANN001 - aiohttp session
    """Push speech to a presenter session, interrupt it mid-sentence; the session's summary before,
    the interrupt's answer, the summary 200 ms after it and 1 s after it, and when it was sent
    (``t_int``, time.monotonic)."""
    import asyncio
    import time

    await asyncio.sleep(1.0)
    async with http.post(f"{api}/speak", data=wav, headers={"Content-Type": "audio/wav"}) as r:
        spoke = await r.json()
        assert r.status == 200, spoke
    await asyncio.sleep(1.8)
    async with http.get(api) as r:
        before = await r.json()
    t_int = time.monotonic()
    async with http.post(f"{api}/interrupt") as r:
        interrupted = await r.json()
    await asyncio.sleep(max(0.0, t_int + 0.2 - time.monotonic()))
    async with http.get(api) as r:
        at_200ms = await r.json()
    await asyncio.sleep(0.8)
    async with http.get(api) as r:
        after = await r.json()
    return {"spoke": spoke, "before": before, "interrupted": interrupted, "at_200ms": at_200ms, "after": after,
            "t_int": t_int}
