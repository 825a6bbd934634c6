"""What the streamed-speech latency benchmarks share: the speech they send, how they pace it, and
how a trial's numbers are read off a series of frames.

A trial: the mouth at rest, speech starts at ``t_send`` (the first chunk handed to the transport),
and at ``t_clear`` the speech is interrupted (or, for a microphone, simply stops).  Frames are
``(time, value)`` series: the rendered mouth opening (server side) or the mouth box's dark-pixel
share (``bench_server_latency.dark_share``) of the frames a client got.  Used by
``bench_stream_api`` (the WebSocket) and ``bench_integrations`` (Pipecat, LiveKit, WHIP/WHEP).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Awaitable, Callable

import numpy as np

from benchmarks.machine import summarize_ms

SAMPLE = Path(__file__).resolve().parents[1] / "realtime" / "samples" / "hello.wav"
WATCH_S = 0.8  # after the interrupt: how long the mouth is watched to stay closed


def load_average() -> dict[str, float]:
    """The machine's 1/5/15-minute load averages (others' jobs share these cores: say so)."""
    import os

    one, five, fifteen = os.getloadavg()
    return {"1min": round(one, 2), "5min": round(five, 2), "15min": round(fifteen, 2), "cores": os.cpu_count()}


def speech_from_onset(rate: int) -> np.ndarray:
    """The bundled sample cut to its first and last loud sample, float32 at ``rate``."""
    import soxr

    from realtime.audio_io import load_audio

    x = load_audio(SAMPLE)
    on = np.flatnonzero(np.abs(x) > 0.02)
    x = x[on[0]:on[-1]]
    return x if rate == 16000 else soxr.resample(x, 16000, rate).astype(np.float32)


def first_after(times: np.ndarray, ok: np.ndarray, t0: float, until: float) -> float | None:
    """Seconds from t0 to the first sample in [t0, until) where ``ok`` holds."""
    idx = np.flatnonzero((times >= t0) & (times < until) & ok)
    return float(times[idx[0]] - t0) if idx.size else None


def settled_after(times: np.ndarray, ok: np.ndarray, t0: float, until: float) -> float | None:
    """From t0, the first time from which ``ok`` holds for every sample up to ``until`` (a pause
    between two words closes the mouth too: only closing for good counts)."""
    inside = np.flatnonzero((times >= t0) & (times < until))
    if inside.size == 0 or not ok[inside[-1]]:
        return None
    bad = inside[~ok[inside]]
    first = inside[0] if bad.size == 0 else bad[-1] + 1
    return float(times[first] - t0)


def pixel_trial(times: np.ndarray, dark: np.ndarray, t_send: float, t_clear: float,
                watch_s: float = WATCH_S) -> tuple[float | None, float | None]:
    """(first moving frame, mouth closed for good) of one trial, from the mouth box's dark share.

    Levels are per trial: rest = the median of the 0.6 s before ``t_send``, the talking span =
    the 90th percentile from 0.3 s in to ``t_clear``; moving above 30 % of the span, at rest below
    15 % of it."""
    rest = dark[(times > t_send - 0.6) & (times < t_send)]
    talk = dark[(times > t_send + 0.3) & (times < t_clear)]
    rest_lvl = float(np.median(rest)) if rest.size else 0.0
    span = max(float(np.percentile(talk, 90)) - rest_lvl, 1e-3) if talk.size else 1e-3
    return (first_after(times, dark > rest_lvl + 0.3 * span, t_send, t_clear),
            settled_after(times, dark < rest_lvl + 0.15 * span, t_clear, t_clear + watch_s))


def series(frames: list[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([t for t, _ in frames], np.float64), np.array([v for _, v in frames], np.float64)


def summarize_rows(rows: list[dict]) -> dict[str, dict | None]:
    """Per key of the trial rows (seconds or None): n, min, p50, p95, p99, mean in ms, missing."""
    out: dict[str, dict | None] = {}
    for key in rows[0] if rows else []:
        vals = [r[key] for r in rows if r[key] is not None]
        if not vals:
            out[key] = None
            continue
        out[key] = {**summarize_ms(vals), "p95_ms": float(np.percentile(np.asarray(vals) * 1000, 95)),
                    "missing": len(rows) - len(vals)}
    return out


def raw_ms(rows: list[dict]) -> list[dict]:
    return [{k: (round(v * 1000, 1) if v is not None else None) for k, v in r.items()} for r in rows]


async def send_paced(send: Callable[[np.ndarray], Awaitable[None]], pcm: np.ndarray, rate: int,
                     chunk: int) -> float:
    """Send ``pcm`` in ``chunk``-sample pieces at real time; returns when the first one was sent
    (time.monotonic, taken just before handing it over)."""
    t_send = time.monotonic()
    sent = 0
    while sent < pcm.size:
        await send(pcm[sent:sent + chunk])
        sent += chunk
        await asyncio.sleep(max(0.0, t_send + sent / rate - time.monotonic()))
    return t_send
