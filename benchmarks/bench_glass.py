"""Glass to glass in a real browser: speech into Chromium's microphone -> lips on its screen.

    python -m benchmarks.bench_glass [--seconds 20] [--warmup 20] [--json PATH] [--plot PATH]
                                     [--engine auto] [--codec vp8|h264]

An in-process server (the real app, engine and frame loop) on 127.0.0.1 and headless Debian
Chromium driven by Playwright, running the real client page (``client_web/``, served at ``/``,
Start clicked like a user).  Chromium's fake microphone plays a WAV of speech bursts (0.8 s cut
from the bundled sample, each starting on loud speech, >= 1.2 s of silence between them).
``glass_probe.js`` is injected before the page's own scripts and records, on the page's
``performance.now()`` clock:

* the microphone track the page sends, and the remote audio track (the speech the server sends
  back), each two ways: a WebAudio AudioWorklet meter (render time, mapped from context time by
  the lower envelope of message arrival times) and a MediaStreamTrackProcessor tap (Chromium:
  ``AudioData.timestamp``, which is the capture time for the mic, the hand-out-for-playout time
  for the remote track; both checked each run against arrival times);
* every presented video frame (``requestVideoFrameCallback``): the share of dark pixels
  (luma < 70) inside the mouth box the server's offer answer names, drawn through a canvas.
  A frame's time is rVFC ``metadata.expectedDisplayTime``: when the compositor expects it on
  screen (the callback's ``now`` is up to one vsync off it).

Onsets are found in Python (``bench_server_latency._onsets``: a rise above a threshold after
>= 0.5 s below it).  Per burst:

* **glass to glass** = lip onset (first presented frame whose dark share crosses 10 % of its
  range) - mic onset (the mic level crossing 10 % of its range);
* **A/V skew** = returned-audio onset - lip onset (positive: sound after lips), as the remote
  track hands audio out for playout, and "at the speaker": plus Chromium's own estimate of its
  audio output path's delay (``media-playout`` stats, ``totalPlayoutDelay / totalSamplesCount``);
* where the time goes: mic -> the burst reaching the server's front-end (the benchmark wraps the
  session's ``on_mic_audio`` in-process and maps ``time.monotonic`` onto the page clock: both
  are CLOCK_MONOTONIC, the offset is bracketed by Playwright round trips, +- ~1 ms); front-end ->
  the lip-onset frame's rVFC ``receiveTime`` (its last packet in Chromium; includes the model's
  lookahead and the frames the mouth takes to open visibly); frame received -> shown; the
  server's own audio-in -> frame-out; and mic -> returned-audio onset.

Also fps (presented frames from rVFC ``presentedFrames``), freezes (no new frame for more than 3
frame intervals) and Chromium's inbound-rtp ``getStats`` over the window (jitter buffer, decode
time, key frames, drops, freezeCount).  The JSON keeps per-burst onsets, every frame's time and
mouth reading, and the audio levels as the max per 10 ms bin.

The window opens after ``--warmup`` seconds of call (default 20): Chromium's audio/video sync
delays the video to match its audio playout delay and steps that up over the first ~20 s (the
video jitter buffer's ``jitterBufferTargetDelay`` minus ``jitterBufferMinimumDelay``, reported
as ``av_sync_delay_ms``), so the first seconds of a call show lower latency than a conversation.

The headline uses the tap's capture timestamps for the mic and the tap's playout times for the
returned audio; the WebAudio-only figures are reported too (``*_webaudio``).  Known biases:

* The mic time is the timestamp Chromium gives a 10 ms buffer when its fake capture device's
  timer delivers it (the page's echo cancellation, noise suppression and AGC apply to it too): no
  microphone hardware or driver latency is included; a real microphone adds a few to tens of ms.
* WebAudio renders its input 10-15 ms after capture (its own buffering, not on the call's path),
  so ``glass_to_glass_webaudio`` reads that much low and the WebAudio A/V skew that much high.
* Frame time is when the compositor was told to show the frame (``--disable-gpu``, headless: no
  real display); a monitor adds its scan-out.  Returned-audio time is when Chromium pulled it for
  playout; the audio output path then adds its buffer, which ``av_skew_at_speaker`` adds back
  from Chromium's estimate (headless: a fake output device, so the estimate is all there is).
* A frame presented while the page's main thread was busy gets no rVFC callback (counted as
  ``missed_callbacks``); if that frame was the first open one, the lip onset reads a frame late.
* Lip onset is quantised to presented frames (25 fps shown on a 60 Hz compositor: 33/50 ms
  steps), so single-burst latencies scatter by about +-20 ms.
* Server, Chromium and the Playwright driver share the machine's cores; the 1-minute load
  average before and after is recorded, since on a busy 2-core machine it moves every figure.
* Playwright adds its own switches to DESIGN.md's list, among them ``--mute-audio``: the returned
  audio is still decoded and pulled for playout, only not heard.  (Without it, on the headless
  build machine, Chromium's audio jitter buffer and concealment grew; the existing browser test
  runs with it too.)
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import shutil
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench_server_latency import BURST_S, GAP_S, _onsets, burst_signal
from benchmarks.machine import RESULTS_DIR, machine_info, publish, save_figure, summarize_ms

CHROMIUM = Path("/usr/bin/chromium")
PROBE_JS = Path(__file__).resolve().with_name("glass_probe.js")
# DESIGN.md's flags; the fake-mic WAV is added per run, and Playwright's persistent context
# passes a fresh --user-data-dir.
CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]
FAKE_MIC_RATE = 48000  # 16-bit mono PCM; 48 kHz is Chromium's native capture rate
FRAME_S = 1 / 25
# after the first frame, before measuring.  Chromium's audio/video sync delays the video to
# match its audio playout delay, stepping it up over the first ~20 s of a call (measured: frame
# received -> shown goes 20 -> ~95 ms, glass to glass ~230 -> ~310 ms); the default measures the
# steady state a conversation sees; --warmup 0 measures a call's first seconds.
WARMUP_S = 20.0
TAIL_S = 1.0  # recorded after the window, so the last burst's lips and sound are in
LEAD_S = 1.0  # recorded before the window, so the first onset has its quiet lead-in
MATCH_S = 1.0  # a lip / returned-audio onset belongs to the mic onset before it within this
AUDIO_REL = 0.10  # audio onset: level crosses 10 % of its (p10 .. p99) range
# lip onset: dark share crosses 10 % of its (p10 .. p95) range.  Lower than bench_server_latency's
# 30 %: the closed mouth has no dark pixels at all here, and a first syllable often opens it to
# only a quarter of the range, which 30 % then misses (the onset jumps to the next syllable).
LIP_REL = 0.10
FREEZE_FACTOR = 3  # a freeze: no new frame presented for more than 3 frame intervals
BIN_S = 0.01  # raw audio levels are kept in the JSON as the max per 10 ms bin
BURST_START_RMS = 0.03  # a burst starts where 60 ms of 10 ms frames in a row exceed this RMS
TARGET_G2G_P50_MS = 200.0
TARGET_SKEW_MS = 40.0


class BenchError(RuntimeError):
    """The benchmark could not measure (no browser, no speech heard, ...): one line for the user."""


# ---------------------------------------------------------------------------------- the fake mic

def clean_bursts(samples: np.ndarray, onsets: list[float], rate: int = 16000) -> tuple[np.ndarray, list[float]]:
    """Silence each burst's leading quiet part so every burst starts on loud speech.

    ``burst_signal`` cuts bursts at arbitrary points of the sample, so some begin with a breath
    or a pause; the mouth then opens at the first real syllable, not at the first faint sample,
    and the measured latency would include the pause.  A burst with no loud 60 ms is dropped.
    """
    out = samples.copy()
    hop = rate // 100
    starts = []
    for t in onsets:
        i0 = int(round(t * rate))
        seg = out[i0:i0 + int(BURST_S * rate)]
        n = seg.size // hop
        loud = np.sqrt(np.mean(seg[:n * hop].reshape(n, hop) ** 2, axis=1)) > BURST_START_RMS
        k = next((k for k in range(n - 5) if loud[k:k + 6].all()), None)
        if k is None:
            seg[:] = 0
            continue
        seg[:k * hop] = 0
        starts.append(t + k * hop / rate)
    return out, starts


def write_fake_mic(path: Path, seconds: float) -> list[float]:
    """The burst WAV Chromium plays as its microphone (16-bit mono PCM, 48 kHz); returns onsets.

    Chromium starts the file when the page opens the microphone and loops it; the file is made
    longer than the run so it does not wrap (if it did, the wrap falls in silence).
    """

    samples, onsets = clean_bursts(*burst_signal(seconds))
    write_fake_mic_wav(path, samples)
    return onsets


def write_fake_mic_wav(path: Path, samples16k: np.ndarray) -> None:
    """16 kHz float speech as the WAV Chromium's fake capture plays: 16-bit mono PCM at 48 kHz."""
    import soxr

    pcm = soxr.resample(samples16k, 16000, FAKE_MIC_RATE)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(FAKE_MIC_RATE)
        w.writeframes((np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes())


# ---------------------------------------------------------------------------------- page data -> series

def _lower_envelope_offset(arrival_ms: np.ndarray, clock_ms: np.ndarray) -> float:
    """Offset mapping a source clock onto performance.now(): data cannot arrive before its time."""
    return float(np.min(arrival_ms - clock_ms))


def meter_series(chunks: list, sample_rate: float) -> tuple[np.ndarray, np.ndarray, dict]:
    """WebAudio meter messages -> (time ms, RMS) per render quantum, on performance.now().

    A message ``[arrival, start frame, [rms per quantum]]`` leaves the audio thread right after
    its last quantum is rendered, so ``min(arrival - end of its quanta)`` maps context time to
    render time.  The offset is also taken over each half of the run: their difference is the
    clock drift (reported; ~0 when the audio clock runs off the system clock).
    """
    if not chunks:
        return np.zeros(0), np.zeros(0), {}
    arrival = np.array([c[0] for c in chunks], np.float64)
    start = np.array([c[1] for c in chunks], np.float64)
    count = np.array([len(c[2]) for c in chunks], np.float64)
    end_ms = (start + 128 * count) / sample_rate * 1000
    offset = _lower_envelope_offset(arrival, end_ms)
    half = arrival.size // 2
    drift = (_lower_envelope_offset(arrival[half:], end_ms[half:]) - _lower_envelope_offset(arrival[:half], end_ms[:half])
             if half > 10 else 0.0)
    t = np.concatenate([(s + 128 * np.arange(len(r))) / sample_rate * 1000 + offset for _, s, r in chunks])
    v = np.concatenate([np.asarray(r, np.float64) for *_, r in chunks])
    delay = arrival - end_ms - offset
    return t, v, {"offset_ms": offset, "drift_ms": drift, "message_delay_p50_ms": float(np.median(delay))}


def tap_series(chunks: list) -> tuple[np.ndarray, np.ndarray, dict]:
    """MediaStreamTrackProcessor chunks -> (time ms, RMS) per sub-block, on performance.now().

    ``[arrival, timestamp ms, duration ms, [rms per sub-block]]``.  Chromium's AudioData
    timestamps are on the page's clock already; ``arrival - timestamp`` (its minimum is the
    offset applied, normally well under 1 ms) says so every run.
    """
    if not chunks:
        return np.zeros(0), np.zeros(0), {}
    arrival = np.array([c[0] for c in chunks], np.float64)
    stamp = np.array([c[1] for c in chunks], np.float64)
    offset = _lower_envelope_offset(arrival, stamp)
    t = np.concatenate([s + offset + d * np.arange(len(r)) / len(r) for _, s, d, r in chunks])
    v = np.concatenate([np.asarray(r, np.float64) for *_, r in chunks])
    delay = arrival - stamp - offset
    return t, v, {"offset_ms": offset, "delivery_p50_ms": float(np.median(delay)),
                  "delivery_p95_ms": float(np.percentile(delay, 95))}


FRAME_FIELDS = ("now", "expected_display", "presentation", "receive", "rtp_timestamp", "presented_frames",
                "processing_s", "dark", "luma")


def frame_table(frames: list) -> dict[str, np.ndarray]:
    """rVFC records -> columns (times in ms on performance.now(); None -> NaN)."""
    a = np.array([[np.nan if v is None else v for v in f] for f in frames], np.float64).reshape(-1, len(FRAME_FIELDS))
    return {name: a[:, i] for i, name in enumerate(FRAME_FIELDS)}


def relative_threshold(level: np.ndarray, rel: float, hi_pct: float) -> float:
    """``lo + rel * (hi - lo)`` with lo = p10 (the silence/closed level) and hi = ``hi_pct``."""
    lo, hi = np.percentile(level, [10, hi_pct])
    return float(lo + rel * max(hi - lo, 1e-6))


def onsets_ms(t_ms: np.ndarray, level: np.ndarray, threshold: float) -> list[float]:
    """Onset times (ms) of a level series: ``bench_server_latency._onsets`` (0.5 s quiet rule)."""
    order = np.argsort(t_ms)
    return [1000 * x for x in _onsets(t_ms[order] / 1000, level[order], threshold)]


def first_after(t: float, candidates: list[float], within_ms: float = MATCH_S * 1000) -> float | None:
    """The first candidate in (t, t + within]: the response to the onset at t."""
    later = [c for c in candidates if t < c <= t + within_ms]
    return min(later) if later else None


def frame_rate_and_freezes(frames: dict[str, np.ndarray], t0: float, t1: float) -> tuple[dict, dict]:
    """fps and freezes in [t0, t1) from rVFC: presented-frame counts and display-time gaps.

    A gap between two callbacks is a freeze when the frames presented across it average more
    than ``FREEZE_FACTOR`` frame intervals each (a gap where frames were presented but no
    callback ran is a missed callback, not a freeze).
    """
    t = frames["expected_display"]
    sel = (t >= t0) & (t < t1)
    t, presented = t[sel], frames["presented_frames"][sel]
    if t.size < 2:
        return {"presented": 0.0, "callbacks": 0.0}, {"count": 0, "total_ms": 0.0, "longest_ms": 0.0,
                                                       "threshold_ms": FREEZE_FACTOR * FRAME_S * 1000,
                                                       "missed_callbacks": 0}
    span_s = (t[-1] - t[0]) / 1000
    dt, dp = np.diff(t), np.maximum(np.diff(presented), 1)
    limit = FREEZE_FACTOR * FRAME_S * 1000
    frozen = dt / dp > limit
    fps = {"presented": float((presented[-1] - presented[0]) / span_s), "callbacks": float((t.size - 1) / span_s)}
    freezes = {"count": int(frozen.sum()), "total_ms": float(dt[frozen].sum()),
               "longest_ms": float(dt.max()), "threshold_ms": limit, "missed_callbacks": int((dp - 1).sum())}
    return fps, freezes


def _stat_summary(samples_s: list[float]) -> dict[str, Any] | None:
    """``summarize_ms`` plus p95, max and the raw values (ms)."""
    if not samples_s:
        return None
    a = np.asarray(samples_s, np.float64)
    return {**summarize_ms(a), "p95_ms": float(np.percentile(a * 1000, 95)), "max_ms": float(a.max() * 1000),
            "raw_ms": [round(1000 * x, 1) for x in samples_s]}


def webrtc_summary(start: dict | None, end: dict | None) -> dict[str, Any]:
    """Chromium's WebRTC figures over the measured window (end minus start snapshot).

    inbound-rtp video/audio (jitter buffer, decode, key frames, drops, freezes), the audio
    output path's delay (``media-playout``) and the mic's outbound-rtp (Opus packet length).
    """
    def delta(kind: str, key: str) -> float | None:
        e = (end or {}).get(kind) or {}
        s = (start or {}).get(kind) or {}
        if key not in e:
            return None
        return float(e[key]) - float(s.get(key, 0.0))

    def ratio(kind: str, num: str, den: str, scale: float = 1000.0) -> float | None:
        n, d = delta(kind, num), delta(kind, den)
        return None if n is None or not d else scale * n / d

    out: dict[str, Any] = {"video": {
        "jitter_buffer_ms": ratio("video", "jitterBufferDelay", "jitterBufferEmittedCount"),
        "decode_ms": ratio("video", "totalDecodeTime", "framesDecoded"),
        "processing_delay_ms": ratio("video", "totalProcessingDelay", "framesDecoded"),
        "target_delay_ms": ratio("video", "jitterBufferTargetDelay", "jitterBufferEmittedCount"),
        "minimum_delay_ms": ratio("video", "jitterBufferMinimumDelay", "jitterBufferEmittedCount"),
        "frames_decoded": delta("video", "framesDecoded"),
        "key_frames_decoded": delta("video", "keyFramesDecoded"),
        "frames_dropped": delta("video", "framesDropped"),
        "freeze_count": delta("video", "freezeCount"),
        "freezes_total_s": delta("video", "totalFreezesDuration"),
        "packets_lost": delta("video", "packetsLost"),
        "decoder": ((end or {}).get("video") or {}).get("decoderImplementation"),
    }, "audio": {
        "jitter_buffer_ms": ratio("audio", "jitterBufferDelay", "jitterBufferEmittedCount"),
        "concealed_percent": ratio("audio", "concealedSamples", "totalSamplesReceived", 100.0),
        "packets_lost": delta("audio", "packetsLost"),
        "playout_delay_ms": ratio("playout", "totalPlayoutDelay", "totalSamplesCount"),
    }, "mic_send": {
        "packets_sent": delta("audio_out", "packetsSent"),
        "target_bitrate": ((end or {}).get("audio_out") or {}).get("targetBitrate"),
    }}
    span = None
    if start and end and "t" in start and "t" in end:
        span = (end["t"] - start["t"]) / 1000
    frames = out["video"]["frames_decoded"]
    out["video"]["decoded_fps"] = frames / span if frames is not None and span else None
    video_end = (end or {}).get("video") or {}
    out["video"]["since_call_start"] = {k: video_end.get(k) for k in ("framesDecoded", "keyFramesDecoded", "framesDropped",
                                                                     "freezeCount", "totalFreezesDuration", "pliCount")}
    out["window_s"] = span
    v = out["video"]
    # target - minimum: what external factors (Chromium's audio/video sync) add to the video delay
    v["av_sync_delay_ms"] = (v["target_delay_ms"] - v["minimum_delay_ms"]
                             if v["target_delay_ms"] is not None and v["minimum_delay_ms"] is not None else None)
    sent = out["mic_send"]["packets_sent"]
    out["mic_send"]["packet_ms"] = 1000 * span / sent if sent and span else None  # Opus frame length
    return out


def _numeric(report: dict | None) -> dict | None:
    """A stats report without its string ids (kept raw in the JSON)."""
    if not report:
        return None
    return {kind: ({k: v for k, v in s.items() if isinstance(v, (int, float)) or k in ("decoderImplementation", "codecId")}
                   if isinstance(s, dict) else s) for kind, s in report.items()}


def _binned(t_ms: np.ndarray, level: np.ndarray, t0: float, t1: float) -> list[float | None]:
    """Max level per BIN_S bin over [t0, t1) (None where no sample fell): the raw series kept."""
    n = int(np.ceil((t1 - t0) / (BIN_S * 1000)))
    out = np.full(n, np.nan)
    idx = ((t_ms - t0) // (BIN_S * 1000)).astype(int)
    ok = (idx >= 0) & (idx < n)
    np.fmax.at(out, idx[ok], level[ok])
    return [None if np.isnan(v) else round(float(v), 5) for v in out]


def analyse(page: dict, t0: float, t1: float) -> dict[str, Any]:
    """Onsets, per-burst latencies and the raw series from the probe's data; window [t0, t1) ms.

    Mic onsets inside the window define the bursts; their lip and returned-audio onsets may fall
    up to ``MATCH_S`` later (the page data runs ``TAIL_S`` past the window).
    """
    rate = (page.get("audioContext") or {}).get("sampleRate") or 48000
    series: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    clocks: dict[str, dict] = {}
    for name in ("mic", "ret"):
        t, v, info = meter_series(page["meters"].get(name, []), rate)
        series[f"{name}_webaudio"], clocks[f"{name}_webaudio"] = (t, v), info
        t, v, info = tap_series(page["taps"].get(name, []))
        if t.size:
            series[f"{name}_tap"], clocks[f"{name}_tap"] = (t, v), info
    if page.get("server_mic"):
        series["server_mic"] = (np.concatenate([np.full(len(r), t) for t, r in page["server_mic"]]),
                                np.concatenate([np.asarray(r, np.float64) for _, r in page["server_mic"]]))
    frames = frame_table(page["frames"])
    have_tap = "mic_tap" in series and "ret_tap" in series
    mic_key, ret_key = ("mic_tap", "ret_tap") if have_tap else ("mic_webaudio", "ret_webaudio")

    onsets: dict[str, list[float]] = {}
    thresholds: dict[str, float] = {}
    for key, (t, v) in series.items():
        if t.size:
            thresholds[key] = relative_threshold(v, AUDIO_REL, 99)
            onsets[key] = onsets_ms(t, v, thresholds[key])
        else:
            onsets[key] = []
    shown = np.isfinite(frames["dark"])
    lip_t, lip_v = frames["expected_display"][shown], frames["dark"][shown]
    thresholds["lips"] = relative_threshold(lip_v, LIP_REL, 95) if lip_v.size else float("nan")
    onsets["lips"] = onsets_ms(lip_t, lip_v, thresholds["lips"]) if lip_v.size else []

    bursts = []
    for m in (x for x in onsets.get(mic_key, []) if t0 <= x < t1):
        b: dict[str, Any] = {"mic_ms": m - t0}
        lip = first_after(m, onsets["lips"])
        ret = first_after(m, onsets.get(ret_key, []))
        m_wa = first_after(m - 50, onsets.get("mic_webaudio", []), 100)  # the same burst, via WebAudio
        r_wa = first_after(m, onsets.get("ret_webaudio", []))
        b["lip_ms"] = None if lip is None else lip - t0
        # when the onset frame's last packet reached Chromium: splits the latency into
        # mic -> server -> network (before) and jitter buffer + decode + compositor (after)
        rx = None if lip is None else frames["receive"][np.argmin(np.abs(frames["expected_display"] - lip))]
        b["lip_received_ms"] = None if rx is None or np.isnan(rx) else float(rx) - t0
        b["ret_ms"] = None if ret is None else ret - t0
        b["mic_webaudio_ms"] = None if m_wa is None else m_wa - t0
        b["ret_webaudio_ms"] = None if r_wa is None else r_wa - t0
        b["glass_to_glass_ms"] = None if lip is None else lip - m
        b["av_skew_ms"] = None if lip is None or ret is None else ret - lip
        b["mic_to_ret_ms"] = None if ret is None else ret - m
        b["mic_to_lip_received_ms"] = None if b["lip_received_ms"] is None else b["lip_received_ms"] + t0 - m
        heard = first_after(m, onsets.get("server_mic", []))  # the burst reaching the server's front-end
        b["server_heard_ms"] = None if heard is None else heard - t0
        b["mic_to_server_ms"] = None if heard is None else heard - m
        b["server_to_lip_received_ms"] = (None if heard is None or b["lip_received_ms"] is None
                                          else b["lip_received_ms"] + t0 - heard)
        b["glass_to_glass_webaudio_ms"] = None if lip is None or m_wa is None else lip - m_wa
        b["av_skew_webaudio_ms"] = None if lip is None or r_wa is None else r_wa - lip
        bursts.append({k: (None if v is None else round(v, 2)) for k, v in b.items()})

    def column(key: str) -> list[float]:
        return [b[key] / 1000 for b in bursts if b[key] is not None]

    fps, freezes = frame_rate_and_freezes(frames, t0, t1)
    lo, hi = t0 - LEAD_S * 1000, t1 + TAIL_S * 1000
    in_raw = (frames["expected_display"] >= lo) & (frames["expected_display"] < hi)
    raw = {"t0_ms": 0.0, "start_ms": -LEAD_S * 1000, "bin_ms": BIN_S * 1000,
           **{f"{key}_level": _binned(t, v, lo, hi) for key, (t, v) in series.items()},
           "frames": {"t_ms": [round(float(x - t0), 2) for x in frames["expected_display"][in_raw]],
                      "callback_ms": [round(float(x - t0), 2) for x in frames["now"][in_raw]],
                      "receive_ms": [None if np.isnan(x) else round(float(x - t0), 2) for x in frames["receive"][in_raw]],
                      "presented": [int(x) for x in frames["presented_frames"][in_raw]],
                      "dark": [None if np.isnan(x) else round(float(x), 4) for x in frames["dark"][in_raw]],
                      "luma": [None if np.isnan(x) else round(float(x), 2) for x in frames["luma"][in_raw]]},
           "onsets_ms": {k: [round(x - t0, 2) for x in v if lo <= x < hi] for k, v in onsets.items()}}
    receive_to_display = frames["expected_display"] - frames["receive"]
    receive_to_display = receive_to_display[np.isfinite(receive_to_display)]
    return {
        "mic_clock": "capture (MediaStreamTrackProcessor)" if have_tap else "webaudio render",
        "glass_to_glass": _stat_summary(column("glass_to_glass_ms")),
        "glass_to_glass_webaudio": _stat_summary(column("glass_to_glass_webaudio_ms")),
        "av_skew": _stat_summary(column("av_skew_ms")),
        "av_skew_webaudio": _stat_summary(column("av_skew_webaudio_ms")),
        "mic_to_returned_audio": _stat_summary(column("mic_to_ret_ms")),
        "mic_to_lip_frame_received": _stat_summary(column("mic_to_lip_received_ms")),
        "mic_to_server": _stat_summary(column("mic_to_server_ms")),
        "server_to_lip_frame_received": _stat_summary(column("server_to_lip_received_ms")),
        "receive_to_display": _stat_summary(list(receive_to_display / 1000)),
        "fps": fps, "freezes": freezes, "bursts": bursts,
        "bursts_heard": len(bursts), "bursts_measured": sum(b["glass_to_glass_ms"] is not None for b in bursts),
        "thresholds": {k: round(v, 5) for k, v in thresholds.items()}, "clocks": clocks, "raw": raw,
    }


# ---------------------------------------------------------------------------------- the run

def chromium_path() -> Path:
    """Debian's chromium, or one on PATH; raises BenchError naming the fix."""
    if CHROMIUM.is_file():
        return CHROMIUM
    found = shutil.which("chromium")
    if found:
        return Path(found)
    raise BenchError("needs Chromium at /usr/bin/chromium (Debian: apt-get install chromium)")


def check_requirements() -> Path:
    """Chromium and the playwright package are there; returns Chromium's path."""
    if importlib.util.find_spec("playwright") is None:
        raise BenchError("needs the playwright Python package: pip install 'lipstream[bench]' "
                         "(the system Chromium is used; never run 'playwright install')")
    return chromium_path()


async def _wait(page, expression: str, timeout_s: float, what: str) -> None:  # noqa: ANN001 - playwright page
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    try:
        await page.wait_for_function(expression, timeout=timeout_s * 1000, polling=100)
    except PlaywrightTimeout:
        raise BenchError(f"{what} (waited {timeout_s:.0f} s)") from None


def hook_server_mic(session, sink: list) -> None:  # noqa: ANN001 - realtime.session.Session
    """Record when the server's session hears mic audio: (time.monotonic() ms, [RMS per 2.5 ms]).

    A run-time wrap of this one session object's ``on_mic_audio`` (the point where decoded,
    16 kHz mic audio enters the front-end); nothing else changes.  With the page clock mapped
    onto ``time.monotonic`` it splits glass to glass into browser -> server and server -> browser.
    """
    import time

    original = session.on_mic_audio

    def on_mic_audio(samples16k: np.ndarray) -> None:
        n = samples16k.size // 40
        rms = np.sqrt(np.mean(samples16k[:n * 40].reshape(n, 40).astype(np.float64) ** 2, axis=1)) if n else []
        sink.append((time.monotonic() * 1000, [float(x) for x in rms]))
        original(samples16k)

    session.on_mic_audio = on_mic_audio


async def page_clock_offset(page, tries: int = 7) -> dict[str, float]:  # noqa: ANN001 - playwright page
    """``time.monotonic()`` minus the page's ``performance.now()``, in ms, bracketed by round trips.

    Both read CLOCK_MONOTONIC on Linux (Chromium's TimeTicks), so the offset is a constant;
    the tightest of ``tries`` round trips bounds it to +- half that round trip.
    """
    import time

    best = None
    for _ in range(tries):
        before = time.monotonic() * 1000
        page_now = await page.evaluate("performance.now()")
        after = time.monotonic() * 1000
        if best is None or after - before < best[1]:
            best = ((before + after) / 2 - page_now, after - before)
    return {"offset_ms": best[0], "uncertainty_ms": best[1] / 2}


async def run(seconds: float, engine_name: str = "auto", codec: str = "vp8", warmup_s: float = WARMUP_S,
              render_when: str = "tick", model_dir: Path | None = None,
              receiver_target_ms: float | None = None, mic_ptime_ms: int = 20) -> dict:
    """Measure glass to glass for ``seconds`` in headless Chromium against an in-process server,
    after ``warmup_s`` of the call (see WARMUP_S)."""
    import aiohttp
    from playwright.async_api import async_playwright

    from benchmarks.webrtc_client import serving
    from engines.factory import create_engine
    from realtime.progress import ProgressLine
    from realtime.server import K_STATE

    chromium = check_requirements()
    engine = create_engine(engine_name) if model_dir is None else create_engine(engine_name, model_dir)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="lipstream-glass-") as tmp:
        wav = Path(tmp) / "fake_mic.wav"
        # the file starts when the page opens the mic: cover connecting + settling + window + tail
        write_fake_mic(wav, seconds + warmup_s + TAIL_S + 6.0)
        flags = [*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={wav}"]
        async with serving(engine, codec=codec, render_when=render_when, mic_ptime_ms=mic_ptime_ms) as (base, app), async_playwright() as pw:
            context = await pw.chromium.launch_persistent_context(
                str(Path(tmp) / "profile"), executable_path=str(chromium), headless=True, args=flags,
                viewport={"width": 760, "height": 760})
            try:
                page = context.pages[0] if context.pages else await context.new_page()
                log: list[str] = []
                page.on("pageerror", lambda e: log.append(f"pageerror: {e}"))
                page.on("console", lambda m: log.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
                if receiver_target_ms is not None:
                    await page.add_init_script(script=f"window.__glassReceiverTargetMs = {float(receiver_target_ms)};")
                await page.add_init_script(path=str(PROBE_JS))
                await page.goto(f"{base}/")
                await _wait(page, "document.querySelectorAll('#avatars option').length > 0", 10,
                            "the client page never listed the avatars")
                await page.click("#start")
                await _wait(page, "window.lipstream.phase === 'connected' || window.lipstream.error !== null", 20,
                            "the call never connected")
                if await page.evaluate("window.lipstream.phase") != "connected":
                    raise BenchError(f"the call failed: {await page.text_content('#status')!r} {log}")
                await _wait(page, "window.__glass.frames.filter(f => f[7] !== null).length >= 5", 10,
                            "no video frame with a mouth box was presented")
                sid = await page.evaluate("window.lipstream.sessionId")
                server_mic: list = []
                if sid in app[K_STATE].sessions:
                    hook_server_mic(app[K_STATE].sessions[sid], server_mic)
                clock0 = await page_clock_offset(page)
                await asyncio.sleep(max(warmup_s, 0.5))
                t0 = await page.evaluate("performance.now()")
                stats0 = await page.evaluate("window.__glass.stats()")
                cpu0, sent0 = time.process_time(), app[K_STATE].sessions[sid].stats.frames_rendered
                loop = asyncio.get_running_loop()
                progress = ProgressLine("glass-to-glass benchmark", unit="s")
                start = loop.time()
                while (done := loop.time() - start) < seconds:
                    progress(int(done), int(np.ceil(seconds)))
                    await asyncio.sleep(min(0.25, seconds - done))
                progress(int(np.ceil(seconds)), int(np.ceil(seconds)))
                t1 = t0 + seconds * 1000
                server_cpu_ms = 1000 * (time.process_time() - cpu0) / max(
                    1, app[K_STATE].sessions[sid].stats.frames_rendered - sent0)
                stats1 = await page.evaluate("window.__glass.stats()")
                await asyncio.sleep(TAIL_S)
                clock1 = await page_clock_offset(page)
                data = await page.evaluate(f"window.__glass.collect({t0 - LEAD_S * 1000 - 500})")
                async with aiohttp.ClientSession() as http, http.get(f"{base}/api/sessions/{sid}") as r:
                    session = await r.json()
                state = app[K_STATE]
                server_latencies = list(state.latency.samples)
                max_lag = state.config.max_lag_frames
                browser_version = context.browser.version if context.browser else None
            finally:
                await context.close()
    load_after = os.getloadavg()

    openings = session.get("openings") or [0.0]
    if session.get("mic_s", 0) <= 0 or max(openings) <= 0.2:
        raise BenchError(f"the server heard no speech from Chromium's fake microphone (mic_s={session.get('mic_s')}, "
                         f"max mouth opening {max(openings):.2f}): a wrong or unreadable "
                         f"--use-file-for-fake-audio-capture WAV plays silence")
    if data["errors"]:
        raise BenchError(f"the page probe failed: {data['errors'][:3]}")
    if not data["mouthBox"]:
        raise BenchError("the offer answer carried no mouth_box: this server is too old for this benchmark")
    offset = clock0 if clock0["uncertainty_ms"] <= clock1["uncertainty_ms"] else clock1
    data["server_mic"] = [[t - offset["offset_ms"], rms] for t, rms in server_mic]
    a = analyse(data, t0, t1)
    if a["bursts_heard"] == 0:
        raise BenchError(f"no speech onset on the page's microphone track in {seconds:g} s "
                         "(Chromium's fake mic played silence, or --seconds is under one burst period of "
                         f"{BURST_S + GAP_S:g} s)")
    webrtc = webrtc_summary(stats0, stats1)
    playout = webrtc["audio"]["playout_delay_ms"]
    speaker = ([b["av_skew_ms"] / 1000 + playout / 1000 for b in a["bursts"] if b["av_skew_ms"] is not None]
               if playout is not None else [])
    return {
        "benchmark": "glass_to_glass", "machine": machine_info(), "engine": engine.name,
        "model": {"name": engine.manifest.name, "lookahead_s": engine.manifest.lookahead_s},
        "settings": {"seconds": seconds, "warmup_s": warmup_s, "burst_s": BURST_S, "gap_s": GAP_S, "codec": codec,
                     "max_lag_frames": max_lag, "browser": f"Chromium {browser_version}", "mic_ptime_ms": mic_ptime_ms,
                     "receiver_target_ms": receiver_target_ms, "model_dir": str(model_dir) if model_dir else None,
                     "chromium_flags": [*CHROMIUM_FLAGS, "--use-file-for-fake-audio-capture=<burst wav>",
                                        "--user-data-dir=<fresh temp dir>",
                                        "(+ Playwright's own defaults, --mute-audio among them)"],
                     "fake_mic": f"16-bit mono PCM WAV, {FAKE_MIC_RATE} Hz",
                     "mic_constraints": data.get("micSettings"),
                     "frame_time": "requestVideoFrameCallback metadata.expectedDisplayTime",
                     "mic_clock": a["mic_clock"], "mouth_box": data["mouthBox"],
                     "audio_onset": f"level > p10 + {AUDIO_REL:g} * (p99 - p10)",
                     "lip_onset": f"dark share (luma < 70) > p10 + {LIP_REL:g} * (p95 - p10)",
                     "transport": "headless Chromium (Playwright) on 127.0.0.1, server in the same process",
                     "load_avg_1m": [round(load_before[0], 2), round(load_after[0], 2)]},
        "glass_to_glass": a["glass_to_glass"], "glass_to_glass_webaudio": a["glass_to_glass_webaudio"],
        "av_skew": a["av_skew"], "av_skew_webaudio": a["av_skew_webaudio"],
        "av_skew_at_speaker": _stat_summary(speaker),
        "mic_to_returned_audio": a["mic_to_returned_audio"],
        "mic_to_lip_frame_received": a["mic_to_lip_frame_received"],
        "mic_to_server": a["mic_to_server"],
        "server_to_lip_frame_received": a["server_to_lip_frame_received"],
        "page_clock": {"offset_ms_start": clock0["offset_ms"], "offset_ms_end": clock1["offset_ms"],
                       "uncertainty_ms": offset["uncertainty_ms"],
                       "note": "time.monotonic() - performance.now(); its change start -> end is the drift"},
        "server_audio_to_frame": _stat_summary(server_latencies) if server_latencies else None,
        # this process (the server; Playwright's driver is mostly another process) per frame rendered
        "process_cpu_ms_per_frame": round(server_cpu_ms, 2),
        "receive_to_display": {k: v for k, v in (a["receive_to_display"] or {}).items() if k != "raw_ms"} or None,
        "fps": {**a["fps"], "decoded": webrtc["video"]["decoded_fps"]}, "freezes": a["freezes"],
        "webrtc_stats": webrtc,
        "bursts_heard": a["bursts_heard"], "bursts_measured": a["bursts_measured"], "bursts": a["bursts"],
        "server_session": {"mic_s": session.get("mic_s"), "max_opening": max(openings),
                           "frames_sent": session.get("frames_sent"), "frames_repeated": session.get("frames_repeated")},
        "audio_context": data.get("audioContext"), "clocks": a["clocks"], "thresholds": a["thresholds"],
        "webrtc_stats_raw": {"start": _numeric(stats0), "end": _numeric(stats1)},
        "raw": a["raw"],
    }


# ---------------------------------------------------------------------------------- output

def _ms(summary: dict | None, key: str, signed: bool = False) -> str:
    if not summary:
        return "–"
    return f"{summary[key]:+.0f}" if signed else f"{summary[key]:.0f}"


def _num(x: float | None, fmt: str = ".1f") -> str:
    return "–" if x is None else format(x, fmt)


def print_table(result: dict) -> None:
    """The headline figures, one line each, with the targets they are held against."""
    g, s = result["glass_to_glass"], result["av_skew"]
    gw, sw = result["glass_to_glass_webaudio"], result["av_skew_webaudio"]
    print(f"\nglass to glass in Chromium ({result['settings']['codec']}, {result['engine']}, "
          f"{result['bursts_measured']} of {result['bursts_heard']} bursts after {result['settings']['warmup_s']:g} s "
          f"of call; mic clock: {result['settings']['mic_clock']})")
    print(f"  mic onset -> lips on screen    p50 {_ms(g, 'p50_ms')} ms   p95 {_ms(g, 'p95_ms')}   "
          f"min {_ms(g, 'min_ms')}   max {_ms(g, 'max_ms')}   (target p50 <= {TARGET_G2G_P50_MS:.0f})")
    print(f"  A/V skew (sound - lips)        p50 {_ms(s, 'p50_ms', True)} ms   min {_ms(s, 'min_ms', True)}   "
          f"max {_ms(s, 'max_ms', True)}   (target |p50| <= {TARGET_SKEW_MS:.0f}); at the speaker (+ Chromium's "
          f"playout delay {_num(result['webrtc_stats']['audio']['playout_delay_ms'])} ms): "
          f"p50 {_ms(result['av_skew_at_speaker'], 'p50_ms', True)} ms")
    print(f"  via WebAudio only              glass to glass p50 {_ms(gw, 'p50_ms')} ms, A/V skew p50 "
          f"{_ms(sw, 'p50_ms', True)} ms")
    print(f"  where it goes (p50s): mic -> server front-end {_ms(result['mic_to_server'], 'p50_ms')} ms; "
          f"-> lip frame received by Chromium {_ms(result['server_to_lip_frame_received'], 'p50_ms')} ms "
          f"(server audio-in -> frame-out {_ms(result['server_audio_to_frame'], 'p50_ms')}); "
          f"frame received -> shown {_ms(result['receive_to_display'], 'p50_ms')} ms")
    print(f"  mic -> returned audio onset p50 {_ms(result['mic_to_returned_audio'], 'p50_ms')} ms; "
          f"server process CPU {result.get('process_cpu_ms_per_frame', float('nan')):.2f} ms per frame")
    f, z = result["fps"], result["freezes"]
    decoded = f"{f['decoded']:.1f}" if f.get("decoded") else "–"
    print(f"  video: {f['presented']:.1f} fps presented ({decoded} decoded), {z['count']} freezes "
          f"(> {z['threshold_ms']:.0f} ms; longest gap {z['longest_ms']:.0f} ms), {z['missed_callbacks']} rVFC callbacks missed")
    v, a = result["webrtc_stats"]["video"], result["webrtc_stats"]["audio"]
    num = _num
    print(f"  getStats video: jitter buffer {num(v['jitter_buffer_ms'])} ms (A/V sync adds {num(v['av_sync_delay_ms'])} "
          f"to its target), decode {num(v['decode_ms'], '.2f')} ms/frame, "
          f"{num(v['key_frames_decoded'], '.0f')} key frames, {num(v['frames_dropped'], '.0f')} dropped, "
          f"freezeCount {num(v['freeze_count'], '.0f')} (window); since the call started: "
          f"{v['since_call_start']['keyFramesDecoded']} key frames, {v['since_call_start']['freezeCount']} freezes")
    print(f"  getStats audio: jitter buffer {num(a['jitter_buffer_ms'])} ms, concealed {num(a['concealed_percent'], '.2f')} %")


def plot(result: dict, path: Path) -> None:
    """Timeline (mic level, mouth opening, returned-audio level, onsets) and per-burst latencies."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    raw = result["raw"]
    tap = "mic_tap_level" in raw
    mic = raw["mic_tap_level" if tap else "mic_webaudio_level"]
    ret = raw["ret_tap_level" if tap else "ret_webaudio_level"]
    t_bins = (raw["start_ms"] + raw["bin_ms"] * np.arange(len(mic))) / 1000

    def arr(values: list) -> np.ndarray:
        return np.array([np.nan if v is None else v for v in values], np.float64)

    fig = plt.figure(figsize=(14, 9))
    grid = fig.add_gridspec(4, 2, height_ratios=[1, 1, 1, 1.2], width_ratios=[3, 1])
    ax_mic = fig.add_subplot(grid[0, :])
    ax_lip = fig.add_subplot(grid[1, :], sharex=ax_mic)
    ax_ret = fig.add_subplot(grid[2, :], sharex=ax_mic)
    ax_g = fig.add_subplot(grid[3, 0])
    ax_s = fig.add_subplot(grid[3, 1])
    ax_mic.plot(t_bins, arr(mic), lw=0.7, color="tab:blue")
    ax_mic.set_ylabel("mic level\n(RMS, 10 ms max)")
    fr = raw["frames"]
    ax_lip.plot(np.array(fr["t_ms"]) / 1000, arr(fr["dark"]), ".-", ms=2.5, lw=0.6, color="tab:red")
    ax_lip.set_ylabel("mouth opening\n(dark share in box)")
    ax_ret.plot(t_bins[:len(ret)], arr(ret), lw=0.7, color="tab:green")
    ax_ret.set_ylabel("returned audio\n(RMS, 10 ms max)")
    ax_ret.set_xlabel("page time (s) from the start of the measured window")
    for b in result["bursts"]:
        for ax in (ax_mic, ax_lip, ax_ret):
            ax.axvline(b["mic_ms"] / 1000, color="tab:blue", lw=0.8, ls="--")
            if b["lip_ms"] is not None:
                ax.axvline(b["lip_ms"] / 1000, color="tab:red", lw=0.8, ls="--")
            if b["ret_ms"] is not None:
                ax.axvline(b["ret_ms"] / 1000, color="tab:green", lw=0.8, ls=":")
        if b.get("server_heard_ms") is not None:
            ax_mic.axvline(b["server_heard_ms"] / 1000, color="tab:purple", lw=0.8, ls=":")
    ax_mic.set_title(f"glass to glass in Chromium: mic onset (blue), heard by the server (purple), lip onset (red), "
                     f"returned-audio onset (green); {result['settings']['codec']}, {result['machine']['date']}",
                     fontsize=10)
    for ax in (ax_mic, ax_lip):
        plt.setp(ax.get_xticklabels(), visible=False)

    g = [b["glass_to_glass_ms"] for b in result["bursts"] if b["glass_to_glass_ms"] is not None]
    s = [b["av_skew_ms"] for b in result["bursts"] if b["av_skew_ms"] is not None]
    idx = [i for i, b in enumerate(result["bursts"]) if b["glass_to_glass_ms"] is not None]
    ax_g.bar(idx, g, color="tab:red", alpha=0.7)
    ax_g.axhline(TARGET_G2G_P50_MS, color="k", lw=0.8, ls="--", label=f"target p50 {TARGET_G2G_P50_MS:.0f} ms")
    if g:
        ax_g.axhline(float(np.median(g)), color="tab:red", lw=1, label=f"p50 {np.median(g):.0f} ms")
    ax_g.set_xlabel("burst")
    ax_g.set_ylabel("glass to glass (ms)")
    ax_g.legend(loc="lower right", fontsize=8)
    ax_s.plot(np.linspace(-0.25, -0.05, len(s)) if s else [], s, "o", color="tab:green", label="at the track")
    speaker = (result.get("av_skew_at_speaker") or {}).get("raw_ms") or []
    ax_s.plot(np.linspace(0.05, 0.25, len(speaker)) if speaker else [], speaker, "o", mfc="none", color="tab:green",
              label="at the speaker")
    ax_s.axhspan(-TARGET_SKEW_MS, TARGET_SKEW_MS, color="0.9", label=f"target +-{TARGET_SKEW_MS:.0f} ms")
    ax_s.axhline(0, color="k", lw=0.5)
    ax_s.set_xlim(-0.5, 0.5)
    ax_s.set_xticks([])
    ax_s.set_ylabel("A/V skew, sound - lips (ms)")
    ax_s.legend(loc="lower right", fontsize=8)
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (also called by ``lipstream bench``); 0 on success, 1 with one line if it cannot measure."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_glass",
        description="Glass-to-glass latency in real headless Chromium: speech bursts into its fake "
                    "microphone -> the avatar's lips on its screen, plus the A/V skew of the returned "
                    "speech, fps, freezes and Chromium's WebRTC stats.  Needs Debian chromium "
                    "(apt-get install chromium) and playwright (pip install 'lipstream[bench]').",
        epilog="Method and known biases: see the module docstring (benchmarks/bench_glass.py).")
    p.add_argument("--seconds", type=float, default=20.0,
                   help="measured window in seconds (default: 20; one burst every %.0f s)" % (BURST_S + GAP_S))
    p.add_argument("--warmup", type=float, default=WARMUP_S,
                   help="seconds of call before the window opens (default: %(default)g: Chromium's audio/video "
                        "sync settles by then; 0 measures a call's first seconds)")
    p.add_argument("--engine", default="auto", help="inference engine (default: auto)")
    p.add_argument("--codec", default="vp8", choices=("vp8", "h264"), help="video codec the server sends (default: vp8)")
    p.add_argument("--render-when", default="tick", choices=("tick", "window"),
                   help="the server's render trigger (serve --render-when; default: tick)")
    p.add_argument("--model", type=Path, default=None,
                   help="model artifact directory (serve --model), e.g. one exported at another lookahead; "
                        "default: the built-in model")
    p.add_argument("--mic-ptime", type=int, default=20, choices=(10, 20),
                   help="the server's --mic-ptime: Opus packet time asked of Chromium's mic (default: 20)")
    p.add_argument("--receiver-target-ms", type=float, default=None,
                   help="set every remote receiver's jitterBufferTarget to this (a lever under test; the page "
                        "itself leaves it unset)")
    p.add_argument("--json", type=Path, default=RESULTS_DIR / "glass.json", help="result JSON (default: %(default)s)")
    p.add_argument("--plot", type=Path, default=RESULTS_DIR / "glass.png", help="timeline plot PNG (default: %(default)s)")
    args = p.parse_args(argv)
    if args.seconds <= 0 or args.warmup < 0:
        p.error("--seconds must be positive and --warmup not negative")
    try:
        check_requirements()
        result = asyncio.run(run(args.seconds, args.engine, args.codec, args.warmup, args.render_when, args.model,
                                 args.receiver_target_ms, args.mic_ptime))
        result["render_when"] = args.render_when
    except BenchError as exc:
        print(f"bench_glass: {exc}", file=sys.stderr)
        return 1
    publish(result, args.json, args.plot, print_table, plot)
    if not result["bursts_measured"]:
        print("bench_glass: no burst's lips were seen opening: no glass-to-glass figure", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
