"""Kiosk benchmark: local microphone -> mouth on screen latency, A/V skew at the speaker, CPU.

Runs on a virtual rig with no hardware (:class:`VirtualRig`, which the kiosk tests use too):
a private PulseAudio with two null sinks — ``mic_src`` (what is played into it is the kiosk's
microphone, through its monitor) and ``out`` (the kiosk's speaker; its monitor is recorded) — and
an Xvfb display that the benchmark screenshots (``mss``).

What is measured, per trial (a 0.4 s burst of speech every ``--period`` seconds):

- **rig delay**: the benchmark plays the burst into ``mic_src`` from a PortAudio output stream
  (the burst's DAC time, as PortAudio reports it, is t0) and hears it on ``mic_src.monitor``
  through a PortAudio input stream — exactly the way the kiosk hears its microphone.  The
  virtual path has a delay of its own (DESIGN.md: ~1 s through ``paplay``); this is it, measured
  the same way the kiosk's microphone gets the audio.
- **mic -> mouth on screen**: t0 -> the first screenshot of the mouth box that differs from the
  silent mouth, minus the rig delay: what a real microphone's audio (once at a PortAudio
  callback) takes to move the lips on screen.  Measured with ``--output none`` (frames shown as
  soon as they are made) and with the speaker on (frames held until their sound plays).
- **A/V skew**: with the speaker on, when the burst comes out of ``out.monitor`` (minus the same
  rig delay) against when the mouth moved on screen; and the kiosk's own account (each frame's
  show time minus its first sample's DAC time), from its status file.
- **CPU**: the kiosk process and its window process, % of one core, idle and while speaking.
- **idle motion**: ms per 512x512 frame, breathing only (the server's) and with blinks + head.

Run: ``python -m benchmarks.bench_kiosk`` (needs Debian ``pulseaudio pulseaudio-utils
libasound2-plugins xvfb libportaudio2`` and ``pip install mss``); writes
``benchmarks/results/kiosk.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SPEECH = ROOT / "realtime" / "samples" / "hello.wav"
RIG_BINARIES = ("pulseaudio", "pactl", "paplay", "parec", "Xvfb")
RIG_DEBS = "libportaudio2 pulseaudio pulseaudio-utils libasound2-plugins xvfb"


class VirtualRig:
    """A private PulseAudio (null sinks ``mic_src`` and ``out``) and an Xvfb display.

    Everything lives under ``root`` (``XDG_RUNTIME_DIR``), so it touches no system service and
    other rigs do not see it.  :meth:`env` is the environment for the kiosk: PortAudio's ALSA
    device ``pulse`` then records ``mic_src.monitor`` and plays into ``out``.
    """

    def __init__(self, root: Path, size: tuple[int, int] = (1280, 720)) -> None:
        self.root = Path(root)
        self.runtime = self.root / "run"
        self.size = size
        self.display: str | None = None
        self._xvfb: subprocess.Popen | None = None

    @staticmethod
    def missing() -> str | None:
        """Why this machine cannot run the rig (None when it can)."""
        gone = [b for b in RIG_BINARIES if shutil.which(b) is None]
        if ctypes.util.find_library("portaudio") is None:
            gone.append("libportaudio2")
        if gone:
            return f"missing {', '.join(gone)} (apt-get install {RIG_DEBS})"
        return None

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(XDG_RUNTIME_DIR=str(self.runtime), PULSE_SOURCE="mic_src.monitor", PULSE_SINK="out")
        env.pop("PULSE_SERVER", None)
        if self.display:
            env["DISPLAY"] = self.display
        env.update(extra)
        return env

    def start(self) -> VirtualRig:
        self.runtime.mkdir(parents=True, exist_ok=True)
        os.chmod(self.runtime, 0o700)
        self.start_pulse()
        self.start_x()
        return self

    def start_pulse(self, timeout_s: float = 20.0) -> None:
        cmd = ["pulseaudio", "--daemonize=yes", "-n", "--exit-idle-time=-1", "--disallow-exit",
               "--load=module-native-protocol-unix auth-anonymous=1",
               "--load=module-null-sink sink_name=mic_src", "--load=module-null-sink sink_name=out"]
        subprocess.run(cmd, env=self.env(), check=True, capture_output=True, timeout=timeout_s)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            r = subprocess.run(["pactl", "list", "short", "sinks"], env=self.env(), capture_output=True, text=True,
                               timeout=timeout_s)
            if r.returncode == 0 and "mic_src" in r.stdout and "out" in r.stdout:
                return
            time.sleep(0.1)
        raise RuntimeError("PulseAudio did not come up with its null sinks")

    def stop_pulse(self) -> None:
        subprocess.run(["pulseaudio", "--kill"], env=self.env(), capture_output=True, timeout=20)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.pulse_running():
            time.sleep(0.05)

    def pulse_running(self) -> bool:
        return subprocess.run(["pulseaudio", "--check"], env=self.env(), capture_output=True,
                              timeout=20).returncode == 0

    def start_x(self, timeout_s: float = 20.0) -> None:
        r, w = os.pipe()
        self._xvfb = subprocess.Popen(
            ["Xvfb", "-displayfd", str(w), "-screen", "0", f"{self.size[0]}x{self.size[1]}x24", "-nolisten", "tcp"],
            pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(w)
        with os.fdopen(r) as f:
            number = f.readline().strip()
        if not number:
            self._xvfb.kill()
            raise RuntimeError("Xvfb did not start")
        self.display = f":{number}"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not Path(f"/tmp/.X11-unix/X{number}").exists():
            time.sleep(0.05)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.stop_pulse()
        if self._xvfb is not None:
            self._xvfb.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._xvfb.wait(5)
            if self._xvfb.poll() is None:
                self._xvfb.kill()
            self._xvfb = None

    def __enter__(self) -> VirtualRig:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what tests and the benchmark do with it ------------------------------------------------
    def play_into_mic(self, wav: Path) -> subprocess.Popen:
        """``paplay`` a file into the virtual microphone (returns at once)."""
        return subprocess.Popen(["paplay", str(wav)], env=self.env(PULSE_SINK="mic_src"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def record_output(self, rate: int = 16000) -> OutputRecorder:
        """Record what the kiosk plays (``out.monitor``), 16 kHz mono, from now on."""
        return OutputRecorder(self, rate).start()

    def press_key(self, key: str = "q") -> bool:
        """Type ``key`` on the display (XTest, through ctypes); False when libXtst is missing."""
        import ctypes

        xtst_name = ctypes.util.find_library("Xtst")
        if xtst_name is None:
            return False
        x11 = ctypes.CDLL(ctypes.util.find_library("X11") or "libX11.so.6")
        xtst = ctypes.CDLL(xtst_name)
        x11.XOpenDisplay.restype = ctypes.c_void_p
        x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
        x11.XStringToKeysym.restype = ctypes.c_ulong
        x11.XStringToKeysym.argtypes = [ctypes.c_char_p]
        x11.XKeysymToKeycode.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
        x11.XFlush.argtypes = [ctypes.c_void_p]
        x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
        xtst.XTestFakeKeyEvent.argtypes = [ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_ulong]
        dpy = x11.XOpenDisplay(self.display.encode())
        if not dpy:
            return False
        try:
            code = x11.XKeysymToKeycode(dpy, x11.XStringToKeysym(key.encode()))
            xtst.XTestFakeKeyEvent(dpy, code, 1, 0)
            xtst.XTestFakeKeyEvent(dpy, code, 0, 0)
            x11.XFlush(dpy)
        finally:
            x11.XCloseDisplay(dpy)
        return True

    def grabber(self):  # noqa: ANN201 - an mss screenshot object on this display
        import mss

        factory = getattr(mss, "MSS", None) or mss.mss
        return factory(display=self.display)


class OutputRecorder:
    """``parec`` of ``out.monitor`` into memory (raw s16 mono); :meth:`stop` returns float32."""

    def __init__(self, rig: VirtualRig, rate: int) -> None:
        self.rig, self.rate = rig, rate
        self._chunks: list[bytes] = []
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self.started_at = 0.0

    def start(self) -> OutputRecorder:
        self._proc = subprocess.Popen(["parec", "-d", "out.monitor", "--format=s16le", f"--rate={self.rate}",
                                       "--channels=1", "--latency-msec=20"], env=self.rig.env(),
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.started_at = time.monotonic()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        while True:
            data = self._proc.stdout.read1(4096)
            if not data:
                return
            self._chunks.append(data)

    def samples(self) -> np.ndarray:
        data = b"".join(self._chunks)
        return np.frombuffer(data[: len(data) // 2 * 2], np.int16).astype(np.float32) / 32768.0

    def stop(self) -> np.ndarray:
        if self._proc is not None:
            self._proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(5)
            if self._proc.poll() is None:
                self._proc.kill()
        if self._thread is not None:
            self._thread.join(5)
        return self.samples()


def rms_dbfs(x: np.ndarray) -> float:
    return float(10 * np.log10(max(float(np.mean(np.square(x, dtype=np.float64))) if x.size else 0.0, 1e-12)))


def start_kiosk(rig: VirtualRig, status: Path, *args: str, log: Path | None = None) -> subprocess.Popen:
    """``lipstream kiosk`` on the rig's devices, keeping its status in ``status``."""
    cmd = [sys.executable, "-m", "realtime.cli", "kiosk", "--input", "pulse", "--output", "pulse",
           "--status-file", str(status), *args]
    out = open(log, "wb") if log is not None else subprocess.DEVNULL  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, env=rig.env(PYTHONPATH=str(ROOT)), cwd=str(ROOT), stdout=out, stderr=subprocess.STDOUT)


def read_status(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def wait_status(path: Path, proc: subprocess.Popen, cond, timeout_s: float, what: str) -> dict:  # noqa: ANN001
    """Poll the kiosk's status until ``cond(status)``; RuntimeError (with why) otherwise."""
    deadline = time.monotonic() + timeout_s
    st: dict = {}
    while time.monotonic() < deadline:
        st = read_status(path)
        if st and cond(st):
            return st
        if proc.poll() is not None:
            raise RuntimeError(f"the kiosk exited ({proc.returncode}) while waiting for {what}; status {st}")
        time.sleep(0.1)
    raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}; status {st}")


def stop_process(proc: subprocess.Popen, timeout_s: float = 15.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


# -- the measurements --------------------------------------------------------------------------------
def loudest(wav: np.ndarray, rate: int, seconds: float) -> np.ndarray:
    """The ``seconds`` of ``wav`` with the most energy (a burst that opens the mouth wide)."""
    n = int(seconds * rate)
    energy = np.convolve(np.square(wav), np.ones(n), "valid")
    i = int(np.argmax(energy))
    return wav[i:i + n].copy()


class BurstPlayer:
    """A PortAudio output into ``mic_src`` that plays a burst on request and reports its DAC time."""

    def __init__(self, burst48k: np.ndarray) -> None:
        import sounddevice as sd

        self.burst = burst48k.astype(np.float32)
        self._pos = -1
        self._armed = threading.Event()
        self.t0: float | None = None
        self.done = threading.Event()
        os.environ["PULSE_SINK"] = "mic_src"  # read when the stream connects
        self.stream = sd.OutputStream(device="pulse", samplerate=48000, channels=1, dtype="float32",
                                      latency=0.1, callback=self._cb)
        self.stream.start()

    def fire(self) -> None:
        self.t0 = None
        self.done.clear()
        self._armed.set()

    def _cb(self, out: np.ndarray, frames: int, t, status) -> None:  # noqa: ANN001
        out[:] = 0
        if self._armed.is_set() and self._pos < 0:
            self._armed.clear()
            self._pos = 0
            ahead = max(0.0, t.outputBufferDacTime - t.currentTime) if t.currentTime > 0 else self.stream.latency
            self.t0 = time.monotonic() + ahead
        if self._pos >= 0:
            n = min(frames, self.burst.size - self._pos)
            out[:n, 0] = self.burst[self._pos:self._pos + n]
            self._pos += n
            if self._pos >= self.burst.size:
                self._pos = -1
                self.done.set()

    def close(self) -> None:
        self.stream.stop()
        self.stream.close()


class OnsetListener:
    """A PortAudio input on a monitor source: the callback time when the level first crosses."""

    def __init__(self, source: str, threshold: float = 0.02) -> None:
        import sounddevice as sd

        self.threshold = threshold
        self.armed_at: float | None = None
        self.onset: float | None = None
        os.environ["PULSE_SOURCE"] = source
        self.stream = sd.InputStream(device="pulse", samplerate=48000, channels=1, dtype="float32",
                                     latency="low", callback=self._cb)
        self.stream.start()

    def arm(self) -> None:
        self.onset = None
        self.armed_at = time.monotonic()

    def _cb(self, x: np.ndarray, frames: int, t, status) -> None:  # noqa: ANN001
        if self.armed_at is not None and self.onset is None and float(np.abs(x).max()) > self.threshold:
            self.onset = time.monotonic()

    def close(self) -> None:
        self.stream.stop()
        self.stream.close()


class MouthWatcher:
    """Screenshots of the mouth box as fast as they come; the first that differs from the rest."""

    def __init__(self, rig: VirtualRig, box: list[int]) -> None:
        self.region = {"left": box[0], "top": box[1], "width": box[2] - box[0], "height": box[3] - box[1]}
        self.rig = rig
        self.frames: list[tuple[float, np.ndarray]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self.grab_s: list[float] = []

    def _run(self) -> None:
        with self.rig.grabber() as sct:
            while not self._stop.is_set():
                t0 = time.monotonic()
                img = np.asarray(sct.grab(self.region))[..., :3].astype(np.int16)
                t1 = time.monotonic()
                self.grab_s.append(t1 - t0)
                with self._lock:
                    self.frames.append(((t0 + t1) / 2, img))
                    if len(self.frames) > 4000:
                        del self.frames[:1000]
                time.sleep(0.002)

    def between(self, a: float, b: float) -> list[tuple[float, np.ndarray]]:
        with self._lock:
            return [(t, f) for t, f in self.frames if a <= t < b]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


def mouth_onset(watcher: MouthWatcher, t0: float, window_s: float) -> float | None:
    """First screenshot after ``t0`` whose mouth differs clearly from the mouth just before ``t0``."""
    before = watcher.between(t0 - 0.5, t0)
    after = watcher.between(t0, t0 + window_s)
    if len(before) < 3 or not after:
        return None
    ref = np.median(np.stack([f for _, f in before]), axis=0)
    noise = max(float(np.percentile([np.abs(f - ref).mean() for _, f in before], 95)), 0.3)
    for t, f in after:
        if np.abs(f - ref).mean() > max(4 * noise, 2.0):
            return t
    return None


def kiosk_cpu(pid: int, seconds: float) -> dict:
    """% of one core the kiosk process and its window process used over ``seconds``."""
    import psutil

    main = psutil.Process(pid)
    procs = {"kiosk": [main], "window": main.children(recursive=True)}

    def used() -> dict:
        out = {}
        for name, ps in procs.items():
            s = 0.0
            for p in ps:
                with contextlib.suppress(psutil.Error):
                    c = p.cpu_times()
                    s += c.user + c.system
            out[name] = s
        return out

    a, t = used(), time.monotonic()
    time.sleep(seconds)
    b, dt = used(), time.monotonic() - t
    pct = {name: round(100.0 * (b[name] - a[name]) / dt, 1) for name in a}
    pct["total"] = round(sum(pct.values()), 1)
    return pct


def idle_motion_cost(frames: int = 300) -> dict:
    from engines.avatar import load_avatar
    from realtime.idle_motion import FaceGeometry, IdleMotion

    try:
        avatar = load_avatar("default")
    except Exception:  # noqa: BLE001 - not prepared yet: prepare it
        from export.avatar import ensure_default_avatar

        avatar = ensure_default_avatar()
    h, w = avatar.frames.shape[1:3]
    out = {}
    face = FaceGeometry.from_mouth_box(avatar.mouth_boxes[0])
    for name, idle in (("breathing_only", IdleMotion(h, w)), ("blinks_head_breathing", IdleMotion(h, w, face=face))):
        times = []
        img = np.ascontiguousarray(avatar.frames[0])
        for i in range(frames):
            x = img.copy()
            t = time.perf_counter()
            idle.apply(x, 100.0 + i / 25.0)
            times.append(time.perf_counter() - t)
        a = np.asarray(times) * 1000
        out[name] = {"mean_ms": round(float(a.mean()), 3), "p50_ms": round(float(np.median(a)), 3),
                     "p95_ms": round(float(np.percentile(a, 95)), 3), "frame": f"{w}x{h}"}
    return out


def _ms(values: list[float]) -> dict | None:
    if not values:
        return None
    a = np.asarray(values) * 1000
    return {"n": int(a.size), "p50_ms": round(float(np.median(a)), 1), "mean_ms": round(float(a.mean()), 1),
            "min_ms": round(float(a.min()), 1), "max_ms": round(float(a.max()), 1)}


def measure(trials: int, period_s: float, progress: bool = True) -> dict:
    import soxr

    from realtime.audio_io import load_audio

    rig_missing = VirtualRig.missing()
    if rig_missing:
        raise SystemExit(f"bench_kiosk: {rig_missing}")
    speech = load_audio(SPEECH)
    burst16 = loudest(speech, 16000, 0.4)
    burst48 = soxr.resample(burst16, 16000, 48000).astype(np.float32)
    burst48 *= 0.8 / max(1e-6, float(np.abs(burst48).max()))
    result: dict[str, Any] = {"trials": trials, "period_s": period_s, "burst_s": 0.4}
    tmp = Path(tempfile.mkdtemp(prefix="lipstream-bench-kiosk-"))
    with VirtualRig(tmp) as rig:
        os.environ.update(XDG_RUNTIME_DIR=str(rig.runtime))
        os.environ["DISPLAY"] = rig.display
        import sounddevice as sd

        sd._terminate()
        sd._initialize()
        player = BurstPlayer(burst48)
        # 1. the rig's own delay: burst DAC time -> a PortAudio callback on mic_src.monitor hears it
        mic_ear = OnsetListener("mic_src.monitor")
        time.sleep(2.0)  # a fresh monitor stream delivers its first callback after ~1-2 s
        rig_delays = []
        for _ in range(trials):
            mic_ear.arm()
            player.fire()
            player.done.wait(5)
            time.sleep(0.6)
            if mic_ear.onset is not None and player.t0 is not None:
                rig_delays.append(mic_ear.onset - player.t0)
        mic_ear.close()
        rig_delay = float(np.median(rig_delays)) if rig_delays else 0.0
        result["rig_delay"] = _ms(rig_delays)
        if progress:
            print(f"rig delay (burst DAC -> PortAudio callback on the monitor): {rig_delay * 1000:.1f} ms",
                  file=sys.stderr)
        out_ear = OnsetListener("out.monitor", threshold=0.02)
        for label, extra in (("no_speaker", ["--output", "none"]), ("speaker", [])):
            status = tmp / f"status-{label}.json"
            args = ["--no-idle-motion", *extra]
            proc = start_kiosk(rig, status, *args, log=tmp / f"kiosk-{label}.log")
            try:
                st = wait_status(status, proc, lambda s: (s.get("display") or {}).get("frames_shown", 0) > 50,
                                 90, "the kiosk to show frames")
                pid = int(st["pid"])
                box = st["window"]["mouth_box_screen"]
                watcher = MouthWatcher(rig, box)
                time.sleep(1.0)
                cpu_idle = kiosk_cpu(pid, 4.0)
                latencies, skews, screen_ts = [], [], []
                busy_cpu: list[dict] = []
                for i in range(trials):
                    out_ear.arm()
                    player.fire()
                    player.done.wait(5)
                    time.sleep(max(0.5, period_s - 0.4))
                    t0 = player.t0
                    if t0 is None:
                        continue
                    onset = mouth_onset(watcher, t0, period_s - 0.2)
                    if onset is None:
                        continue
                    latencies.append(onset - t0 - rig_delay)
                    screen_ts.append(onset)
                    if label == "speaker" and out_ear.onset is not None:
                        skews.append(onset - (out_ear.onset - rig_delay))
                speaker_proc = rig.play_into_mic(SPEECH)  # 7 s of speech: CPU while speaking
                time.sleep(1.5)
                busy_cpu.append(kiosk_cpu(pid, 4.0))
                speaker_proc.wait(15)
                st = read_status(status)
                watcher.close()
                grab = _ms(watcher.grab_s)
                result[label] = {
                    "kiosk_args": args,
                    "mic_to_mouth": _ms(latencies),
                    "av_skew_external": _ms(skews) if label == "speaker" else None,
                    "kiosk_status": {k: st.get("display", {}).get(k) for k in ("av_skew", "heard_to_screen", "fps",
                                                                               "frames_shown", "frames_dropped")},
                    "speaker": st.get("speaker"), "frames_skipped": st.get("frames_skipped"),
                    "cpu_percent_idle": cpu_idle,
                    "cpu_percent_speaking": busy_cpu[0] if busy_cpu else None,
                    "screenshot_ms": grab,
                }
                if progress:
                    lat = result[label]["mic_to_mouth"]
                    print(f"{label}: mic->mouth {lat and lat['p50_ms']} ms p50 over {lat and lat['n']} trials",
                          file=sys.stderr)
            finally:
                stop_process(proc)
        out_ear.close()
        player.close()
    shutil.rmtree(tmp, ignore_errors=True)
    result["idle_motion"] = idle_motion_cost()
    return result


def print_table(r: dict) -> None:
    print(f"rig delay (subtracted): {r['rig_delay']}")
    for label in ("no_speaker", "speaker"):
        x = r.get(label) or {}
        print(f"{label:10s} mic->mouth {x.get('mic_to_mouth')}")
        if label == "speaker":
            print(f"{'':10s} A/V skew (screen - sound, external) {x.get('av_skew_external')}")
        print(f"{'':10s} kiosk's own: {x.get('kiosk_status')}")
        print(f"{'':10s} CPU idle {x.get('cpu_percent_idle')} %, "
              f"speaking {x.get('cpu_percent_speaking')} % of one core")
    print(f"idle motion: {r.get('idle_motion')}")


def main(argv: list[str] | None = None) -> int:
    from benchmarks.machine import RESULTS_DIR, machine_info, write_result

    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_kiosk", description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=10, help="speech bursts per case (default: 10)")
    p.add_argument("--period", type=float, default=2.0, help="seconds between bursts (default: 2)")
    p.add_argument("--json", type=Path, default=RESULTS_DIR / "kiosk.json", help="result file")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    result = measure(args.trials, args.period, progress=not args.no_progress)
    result["machine"] = machine_info()
    result["command"] = "python -m benchmarks.bench_kiosk " + " ".join(argv if argv is not None else sys.argv[1:])
    print_table(result)
    write_result(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
