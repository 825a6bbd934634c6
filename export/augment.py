"""Seeded audio degradations that make synthetic studio speech look like a real microphone.

TTS output is clean, loud and has digitally silent pauses; a user's laptop or phone adds a noise
floor, room reverb, a band-limited and tilted frequency response and an arbitrary level.  The net
must not learn "exact -4 in the mel = pause" or "speech is always at -1 dBFS".  Everything here is
numpy/scipy on 16 kHz float32 and takes an explicit ``numpy.random.Generator``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import soxr
from scipy import signal

from engines.mel import SAMPLE_RATE


def active_power(x: np.ndarray, frame: int = 320) -> float:
    """Mean power of the loudest frames (speech level, not diluted by pauses)."""
    n = x.size // frame
    if n == 0:
        return float(np.mean(x.astype(np.float64) ** 2) + 1e-12)
    p = np.mean(x[: n * frame].astype(np.float64).reshape(n, frame) ** 2, axis=1)
    thr = np.max(p) * 10 ** (-35 / 10)
    act = p[p > thr]
    return float(np.mean(act) + 1e-12) if act.size else 1e-12


def white_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance white noise."""
    return rng.standard_normal(n).astype(np.float32)


def colored_noise(n: int, rng: np.random.Generator, exponent: float) -> np.ndarray:
    """Noise with power ~ 1/f**exponent (1 = pink, 2 = brown), unit variance."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    f[0] = f[1] if n > 1 else 1.0
    y = np.fft.irfft(spec / f ** (exponent / 2), n)
    return (y / (np.std(y) + 1e-12)).astype(np.float32)


def babble_noise(n: int, rng: np.random.Generator, talkers: int = 6) -> np.ndarray:
    """Speech-like noise: speech-band noise under several random syllable-rate (3-6 Hz) envelopes."""
    base = colored_noise(n, rng, 1.0)
    sos = signal.butter(2, [150, 4000], btype="band", fs=SAMPLE_RATE, output="sos")
    out = np.zeros(n, np.float64)
    t = np.arange(n) / SAMPLE_RATE
    for _ in range(talkers):
        src = signal.sosfilt(sos, np.roll(base, int(rng.integers(n or 1))))
        rate = rng.uniform(3, 6)
        env = np.maximum(0, np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi))) ** 2
        out += src * env * rng.uniform(0.5, 1.0)
    return (out / (np.std(out) + 1e-12)).astype(np.float32)


def add_noise(x: np.ndarray, rng: np.random.Generator, snr_db: float, kind: str = "pink") -> np.ndarray:
    """Add ``kind`` noise ("white", "pink", "brown", "babble") at ``snr_db`` below speech level."""
    gen = {"white": lambda: white_noise(x.size, rng),
           "pink": lambda: colored_noise(x.size, rng, 1.0),
           "brown": lambda: colored_noise(x.size, rng, 2.0),
           "babble": lambda: babble_noise(x.size, rng)}[kind]
    noise = gen()
    scale = np.sqrt(active_power(x) / 10 ** (snr_db / 10))
    return (x + scale * noise).astype(np.float32)


def gain(x: np.ndarray, db: float) -> np.ndarray:
    """Scale by ``db`` decibels."""
    return (x * np.float32(10 ** (db / 20))).astype(np.float32)


def band_limit(x: np.ndarray, low_hz: float, high_hz: float, tilt_db_per_oct: float = 0.0) -> np.ndarray:
    """Band-pass (Butterworth, order 4) plus an optional spectral tilt: phone, laptop, headset."""
    hi = min(high_hz, SAMPLE_RATE / 2 * 0.95)
    sos = signal.butter(4, [max(low_hz, 20.0), hi], btype="band", fs=SAMPLE_RATE, output="sos")
    y = signal.sosfilt(sos, x)
    if tilt_db_per_oct:
        # first-order shelf around 1 kHz approximates a few dB/octave of tilt over the speech band
        g = 10 ** (tilt_db_per_oct * 3 / 20)
        b, a = signal.butter(1, 1000, btype="high", fs=SAMPLE_RATE)
        y = y + (g - 1) * signal.lfilter(b, a, y)
    return y.astype(np.float32)


def room_impulse(rng: np.random.Generator, rt60_s: float, drr_db: float) -> np.ndarray:
    """Synthetic room IR: a direct impulse, then exponentially decaying noise (RT60 ``rt60_s``)
    whose energy sits ``drr_db`` below the direct sound."""
    n = int(min(rt60_s * 1.2, 1.0) * SAMPLE_RATE) + 1
    t = np.arange(n) / SAMPLE_RATE
    tail = rng.standard_normal(n) * np.exp(-6.908 * t / rt60_s)  # -60 dB at rt60
    pre = int(rng.uniform(0.002, 0.01) * SAMPLE_RATE)
    tail[:pre] = 0
    tail *= np.sqrt(10 ** (-drr_db / 10) / (np.sum(tail ** 2) + 1e-12))
    tail[0] = 1.0
    return tail.astype(np.float32)


def reverb(x: np.ndarray, ir: np.ndarray) -> np.ndarray:
    """Convolve with ``ir``, keep the original length and level of the direct path."""
    return signal.fftconvolve(x, ir)[: x.size].astype(np.float32)


def change_speed(x: np.ndarray, factor: float) -> np.ndarray:
    """Play ``factor`` times faster (pitch moves with it); label times scale by ``1/factor``."""
    if abs(factor - 1.0) < 1e-6:
        return x.astype(np.float32)
    return soxr.resample(x.astype(np.float32), SAMPLE_RATE * factor, SAMPLE_RATE).astype(np.float32)


def soft_clip(x: np.ndarray, drive: float) -> np.ndarray:
    """tanh saturation (a cheap mic preamp driven too hard); ``drive`` 1 = mild."""
    peak = float(np.max(np.abs(x))) or 1.0
    return (np.tanh(drive * x / peak) * peak / np.tanh(drive)).astype(np.float32)


def opus_roundtrip(x: np.ndarray, kbps: float) -> np.ndarray:
    """Through a browser's voice codec: 48 kHz mono Opus (libopus via PyAV, VoIP mode, 20 ms
    frames) at ``kbps``, decoded and brought back to 16 kHz, time-aligned with the input."""
    import av

    y = soxr.resample(x.astype(np.float32), SAMPLE_RATE, 48000)
    pcm = (np.clip(y, -1, 1) * 32767).astype(np.int16)
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate, enc.layout, enc.format = 48000, "mono", "s16"
    enc.bit_rate = int(kbps * 1000)
    enc.options = {"application": "voip", "frame_duration": "20"}
    dec = av.CodecContext.create("libopus", "r")
    dec.sample_rate, dec.layout = 48000, "mono"
    out = []
    n = 960
    pcm = np.pad(pcm, (0, (-pcm.size) % n + 2 * n))
    for i in range(0, pcm.size, n):
        fr = av.AudioFrame.from_ndarray(pcm[None, i:i + n], format="s16", layout="mono")
        fr.sample_rate, fr.pts = 48000, i
        for pkt in enc.encode(fr):
            out += [f.to_ndarray().reshape(-1) for f in dec.decode(pkt)]
    for pkt in enc.encode(None):
        out += [f.to_ndarray().reshape(-1) for f in dec.decode(pkt)]
    d = np.concatenate(out).astype(np.float32)
    d = d / 32768.0 if np.abs(d).max() > 2 else d
    delay = int(getattr(enc, "delay", 0) or 312)  # the encoder's look-ahead (pre-skip)
    d = d[delay: delay + y.size]
    d = np.pad(d, (0, y.size - d.size))
    return soxr.resample(d, 48000, SAMPLE_RATE)[: x.size].astype(np.float32)


def ride_gain(x: np.ndarray, rng: np.random.Generator, range_db: float, agc: bool) -> np.ndarray:
    """Slowly moving gain (a person moving, a hand on the fader) of about +-``range_db``, and with
    ``agc`` an automatic gain control that lifts pauses (and their noise) slowly and ducks
    loud speech fast, as the capture chain of a browser or a phone does."""
    hop = SAMPLE_RATE // 100
    n = x.size // hop + 1
    walk = signal.lfilter([0.02], [1, -0.98], rng.standard_normal(n + 200))[200:]
    walk = walk / (np.max(np.abs(walk)) + 1e-9) * range_db
    g_db = walk.copy()
    if agc:
        fr = np.pad(x.astype(np.float64), (0, n * hop - x.size))[: n * hop].reshape(n, hop)
        lvl = 10 * np.log10(np.mean(fr ** 2, axis=1) + 1e-10)
        target, max_boost = float(rng.uniform(-26, -18)), float(rng.uniform(10, 25))
        g = 0.0
        for i in range(n):
            want = min(max(target - lvl[i], -15.0), max_boost)
            g += (want - g) * (0.3 if want < g else 0.008)  # attack ~30 ms, release ~1.2 s
            g_db[i] += g
    gains = np.interp(np.arange(x.size) / hop, np.arange(n), 10 ** (g_db / 20))
    return (x * gains).astype(np.float32)


@dataclass(frozen=True)
class Degradation:
    """One random draw of the microphone chain (recorded for reproducibility/reporting)."""

    speed: float
    level_db: float  # speech level in dBFS after the chain
    rt60_s: float  # 0 = dry
    drr_db: float
    low_hz: float
    high_hz: float
    tilt_db_per_oct: float
    noise_kind: str
    snr_db: float
    clip_drive: float  # 0 = none
    gain_ride_db: float = 0.0  # slow gain wander, 0 = none
    agc: bool = False  # automatic gain control after the level is set
    opus_kbps: float = 0.0  # Opus round trip at this bit rate, 0 = none


def draw(rng: np.random.Generator, strength: float = 1.0) -> Degradation:
    """Random chain; ``strength`` 0 gives only level change and a faint noise floor."""
    s = strength
    use = lambda p: rng.random() < p * s  # noqa: E731 - tiny local predicate
    return Degradation(
        speed=float(rng.uniform(0.88, 1.12)) if use(0.6) else 1.0,
        level_db=float(rng.uniform(-45, -8)),
        rt60_s=float(rng.uniform(0.15, 0.7)) if use(0.5) else 0.0,
        drr_db=float(rng.uniform(0, 12)),
        low_hz=float(rng.uniform(60, 350)) if use(0.6) else 30.0,
        high_hz=float(rng.choice([3400.0, 4000.0, 5500.0, 7000.0, 7900.0])) if use(0.6) else 7900.0,
        tilt_db_per_oct=float(rng.uniform(-3, 3)) if use(0.5) else 0.0,
        noise_kind=str(rng.choice(["white", "pink", "brown", "babble"])),
        snr_db=float(rng.uniform(5, 30)) if use(0.7) else float(rng.uniform(35, 60)),
        clip_drive=float(rng.uniform(1, 3)) if use(0.1) else 0.0,
        gain_ride_db=float(rng.uniform(2, 8)) if use(0.4) else 0.0,
        agc=bool(use(0.35)),
        opus_kbps=float(rng.uniform(14, 40)) if use(0.5) else 0.0,
    )


def apply(x: np.ndarray, d: Degradation, rng: np.random.Generator) -> np.ndarray:
    """Run ``x`` through the chain ``d`` (speed -> room -> mic response -> noise -> level -> gain
    riding / AGC -> clip -> Opus).

    The output length is ``round(len(x) / d.speed)``; phone times must be divided by ``d.speed``.
    """
    y = change_speed(x, d.speed)
    if d.rt60_s > 0:
        y = reverb(y, room_impulse(rng, d.rt60_s, d.drr_db))
    if d.low_hz > 40 or d.high_hz < 7800 or d.tilt_db_per_oct:
        y = band_limit(y, d.low_hz, d.high_hz, d.tilt_db_per_oct)
    y = add_noise(y, rng, d.snr_db, d.noise_kind)
    y = gain(y, d.level_db - 10 * np.log10(active_power(y)))
    if d.gain_ride_db > 0 or d.agc:
        y = ride_gain(y, rng, d.gain_ride_db, d.agc)
    if d.clip_drive > 0:
        y = soft_clip(y, d.clip_drive)
    y = np.clip(y, -1.0, 1.0)
    if d.opus_kbps > 0:
        y = opus_roundtrip(y, d.opus_kbps)
    return np.clip(y, -1.0, 1.0).astype(np.float32)
