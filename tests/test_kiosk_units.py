"""The kiosk's parts without hardware: device choice, the speaker FIFO and its DAC timing, frame
pacing, barge-in, the playlist, idle motion (blinks, head, no jump at the end of speech), the CLI's
errors.  Fast; no audio server, no display."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from realtime.idle_motion import BlinkSchedule, FaceGeometry, IdleMotion
from realtime.kiosk.devices import AudioDeviceError, Device, format_devices, resolve
from realtime.kiosk.kiosk import BargeIn, KioskError, playlist_files
from realtime.kiosk.pacer import FramePacer, Pending, ScreenSink

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "realtime" / "samples" / "hello.wav"

DEVICES = [
    Device(0, "HDA Intel PCH: ALC257 Analog (hw:0,0)", "ALSA", 2, 2, 48000.0),
    Device(1, "USB Conference Mic: Audio (hw:1,0)", "ALSA", 1, 0, 48000.0),
    Device(2, "HDMI 0 (hw:0,3)", "ALSA", 0, 8, 48000.0),
    Device(3, "pulse", "ALSA", 32, 32, 44100.0),
    Device(4, "default", "ALSA", 32, 32, 44100.0, default_input=True, default_output=True),
]


# -- devices ------------------------------------------------------------------------------------
def test_devices_by_index_exact_name_or_unique_part() -> None:
    assert resolve("1", "input", DEVICES).index == 1
    assert resolve(2, "output", DEVICES).index == 2
    assert resolve("pulse", "input", DEVICES).index == 3
    assert resolve("usb", "input", DEVICES).index == 1  # case-insensitive part of the name
    assert resolve("hdmi", "output", DEVICES).index == 2
    assert resolve(None, "input", DEVICES).index == 4  # the default device of that kind
    assert resolve("default", "output", DEVICES).index == 4


def test_device_errors_list_what_was_found_and_how_to_choose() -> None:
    with pytest.raises(AudioDeviceError) as e:
        resolve("hw:0", "output", DEVICES)  # ALC257 and HDMI both match
    msg = str(e.value)
    assert "matches 2 output devices" in msg and "#0" in msg and "#2" in msg
    assert "HDMI 0" in msg and "--list-devices" in msg  # the whole list, and how to choose
    with pytest.raises(AudioDeviceError, match="no device with index 9"):
        resolve("9", "input", DEVICES)
    with pytest.raises(AudioDeviceError, match="has no input channels"):
        resolve("2", "input", DEVICES)  # HDMI plays only
    with pytest.raises(AudioDeviceError, match="no input device has that in its name"):
        resolve("webcam", "input", DEVICES)
    with pytest.raises(AudioDeviceError) as e:
        resolve(None, "input", [d for d in DEVICES if d.inputs == 0])
    assert "no microphone" in str(e.value) and "--input none" in str(e.value)
    with pytest.raises(AudioDeviceError) as e:
        resolve(None, "output", [])
    assert "no speaker" in str(e.value) and "(none" in str(e.value)
    assert "default input" in format_devices(DEVICES)


def test_no_audio_server_means_a_clear_error_and_exit_2(tmp_path: Path) -> None:
    """No PulseAudio behind a private runtime folder: PortAudio sees no device (or there is no
    PortAudio); either way the kiosk says so, lists what it found and exits 2 — before any model
    is loaded."""
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if k not in ("PULSE_SERVER", "DISPLAY")}
    env.update(XDG_RUNTIME_DIR=str(run_dir), PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "realtime.cli", "kiosk"], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "error:" in r.stderr
    # (a machine with a sound card of its own gets past the devices and stops at the missing display)
    assert (("Audio devices found" in r.stderr and "--input" in r.stderr) or "PortAudio is not installed" in r.stderr
            or "no display" in r.stderr), r.stderr
    r = subprocess.run([sys.executable, "-m", "realtime.cli", "kiosk", "--input", "none", "--output", "none",
                        "--play", str(tmp_path / "missing.wav")], env=env, cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "no such file" in r.stderr, r.stderr


def test_kiosk_cli_help_lists_its_options() -> None:
    from realtime.cli import build_parser

    args = build_parser().parse_args(["kiosk", "--input", "2", "--output", "USB", "--play", "a.wav",
                                      "--barge-in", "--http", "8099"])
    from realtime.kiosk.kiosk import config_from_args

    c = config_from_args(args)
    assert (c.input, c.output, c.http_port, c.barge_in, c.presenter) == ("2", "USB", 8099, True, True)
    assert c.wants_mic and c.wants_speaker
    c = config_from_args(build_parser().parse_args(["kiosk", "--output", "none"]))
    assert not c.presenter and c.wants_mic and not c.wants_speaker


def test_playlist_files_in_order(tmp_path: Path) -> None:
    (tmp_path / "b.wav").write_bytes(b"x")
    (tmp_path / "a.mp3").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not audio")
    single = tmp_path / "z.wav"
    single.write_bytes(b"x")
    folder = tmp_path
    assert [p.name for p in playlist_files([single])] == ["z.wav"]
    assert [p.name for p in playlist_files([folder])] == ["a.mp3", "b.wav", "z.wav"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(KioskError, match="no audio files"):
        playlist_files([empty])


# -- the speaker: FIFO, DAC timing --------------------------------------------------------------
class _FakeStream:
    latency = 0.05
    active = True


def _speaker(rate: int = 48000):
    from realtime.kiosk.audio_io import Speaker

    sp = Speaker(DEVICES[0], prime_s=0.06, max_backlog_s=0.3)
    sp.reset(rate, 1)
    sp.stream = _FakeStream()
    return sp


def _callback(sp, frames: int, dac_ahead: float) -> np.ndarray:
    out = np.zeros((frames, sp.channels), np.float32)
    sp._callback(out, frames, SimpleNamespace(currentTime=10.0, outputBufferDacTime=10.0 + dac_ahead), None)
    return out


def test_speaker_plays_a_frame_when_its_dac_time_comes() -> None:
    sp = _speaker()
    frame = np.full(640, 0.25, np.float32)  # one 40 ms frame at 16 kHz
    out = _callback(sp, 480, 0.05)
    assert not out.any()  # nothing queued: silence, still priming
    sp.deliver(frame)
    out = _callback(sp, 480, 0.05)
    assert not out.any()  # 40 ms < the 60 ms cushion: still silent
    sp.deliver(frame)
    mark = sp.frame_mark  # the second frame's first sample
    assert sp.backlog_s == pytest.approx(0.08, abs=0.01)
    t_cb = time.monotonic()
    out = _callback(sp, 480, 0.05)  # the cushion is full: it plays
    assert np.abs(out).max() > 0.1
    # that callback's buffer began at FIFO index 0 and reaches the DAC 50 ms after the callback
    t = sp.play_time(mark)
    assert t == pytest.approx(t_cb + 0.05 + mark / 48000, abs=0.005)
    assert sp.play_time(mark + 4800) - t == pytest.approx(0.1, abs=1e-6)
    # a long silence on the device's side (no callbacks): timing unknown
    assert sp.play_time(mark, now=time.monotonic() + 1.0) is None


def test_speaker_underrun_reprimes_and_clear_drops_speech() -> None:
    sp = _speaker()
    for _ in range(3):
        sp.deliver(np.full(640, 0.25, np.float32))
    while sp.backlog_s > 0:
        _callback(sp, 480, 0.05)
    _callback(sp, 480, 0.05)
    assert sp.underruns == 1
    sp.deliver(np.full(640, 0.25, np.float32))
    assert not _callback(sp, 480, 0.05).any()  # priming again after the underrun
    sp.clear()
    assert sp.backlog_s == 0
    for _ in range(20):  # 0.8 s delivered, nothing played: only max_backlog_s is kept
        sp.deliver(np.full(640, 0.25, np.float32))
    assert sp.backlog_s <= 0.3 + 1e-6 and sp.samples_dropped > 0


def test_speaker_sheds_silence_to_come_back_to_its_cushion_after_a_stall() -> None:
    sp = _speaker()
    speech, silence = np.full(640, 0.25, np.float32), np.zeros(640, np.float32)
    for _ in range(5):  # 200 ms delivered while the device played nothing (a stall)
        sp.deliver(speech)
    assert sp.backlog_s == pytest.approx(0.2, abs=0.02)  # speech is never shed (the resampler holds ~3 ms)
    for _ in range(10):  # steady state afterwards: 40 ms played per 40 ms delivered, silence
        sp.deliver(silence)
        for _ in range(4):
            _callback(sp, 480, 0.05)
    assert sp.backlog_s <= sp.prime_s + sp.slack_s + 0.041
    assert sp.samples_shed > 0 and sp.samples_dropped == 0


# -- pacing -------------------------------------------------------------------------------------
class _ClockSpeaker:
    """play_time(i) = base + i / rate: a speaker whose DAC timing we set."""

    def __init__(self, base: float, rate: int = 48000) -> None:
        self.base, self.rate = base, rate
        self.deliveries = 0
        self.frame_mark = 0
        self.stream = object()

    def play_time(self, index: int, now: float | None = None) -> float | None:
        return self.base + index / self.rate


def test_pacer_shows_each_frame_when_its_sound_plays() -> None:
    sp = _ClockSpeaker(base=100.0)
    pacer = FramePacer(sp, max_hold_s=0.5)
    sink = ScreenSink(pacer, sp)
    for k in range(3):
        sp.deliveries += 1
        sp.frame_mark = k * 1920  # 40 ms at 48 kHz
        sink.deliver(np.zeros((6, 4), np.uint8), SimpleNamespace(frame=k, heard_at=99.9))
    for item in list(pacer._pending):
        item.arrived = 99.95  # delivered just before its sound is due
    item, target, wait = pacer.due(now=99.99)
    assert item is None and wait == pytest.approx(0.01, abs=1e-6)  # frame 0 plays at 100.00
    item, target, _ = pacer.due(now=100.001)
    assert item.frame == 0 and target == pytest.approx(100.0)
    pacer.shown(item, target, 100.003)
    item, target, _ = pacer.due(now=100.09)  # frames 1 (100.04) and 2 (100.08) both due: the newest
    assert item.frame == 2 and pacer.frames_dropped == 1
    pacer.shown(item, target, 100.09)
    s = pacer.summary()
    assert s["frames_shown"] == 2 and s["av_skew"]["max_abs_ms"] == pytest.approx(10.0, abs=0.5)
    # a frame whose audio never came is shown at once
    sink.deliver(np.zeros((6, 4), np.uint8), SimpleNamespace(frame=3, heard_at=None))
    assert pacer._pending[-1].mark is None
    item, _, _ = pacer.due()
    assert item.frame == 3


def test_pacer_never_holds_a_frame_past_max_hold() -> None:
    sp = _ClockSpeaker(base=1e9)  # the speaker claims its sound is far away
    pacer = FramePacer(sp, max_hold_s=0.2)
    pacer.put(Pending(np.zeros((6, 4), np.uint8), None, 0, arrived=50.0, frame=0))
    assert pacer.due(now=50.1)[0] is None
    assert pacer.due(now=50.21)[0].frame == 0


# -- barge-in -----------------------------------------------------------------------------------
def test_barge_in_hears_speech_not_silence_or_hum() -> None:
    from realtime.audio_io import load_audio

    speech = load_audio(HELLO)
    b = BargeIn(speech_s=0.3)
    t = 0.0
    quiet = np.zeros(320 * 50, np.float32)
    rng = np.random.default_rng(0)
    hum = 0.003 * np.sin(2 * np.pi * 50 * np.arange(16000) / 16000) + 0.001 * rng.standard_normal(16000)
    hum = hum.astype(np.float32)
    for x in (quiet, hum):
        for chunk in np.array_split(x, len(x) // 320):
            assert not b.push(chunk, t)
            t += 0.02
    fired = None
    for i, chunk in enumerate(np.array_split(speech, len(speech) // 320)):
        if b.push(chunk, t) and fired is None:
            fired = i * 0.02
        t += 0.02
    assert fired is not None and fired < 2.0  # within the first words
    assert b.quiet_for(t + 1.0) >= 1.0


# -- idle motion --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def face_image() -> tuple[np.ndarray, FaceGeometry]:
    """A 256x256 textured 'portrait' with a face geometry (the mouth-box estimate)."""
    rng = np.random.default_rng(1)
    img = (rng.random((32, 32, 3)) * 200 + 30).astype(np.uint8)
    img = np.ascontiguousarray(np.repeat(np.repeat(img, 8, 0), 8, 1))
    face = FaceGeometry.from_mouth_box((104, 150, 152, 176))
    return img, face


def test_blinks_come_at_natural_intervals_and_last_a_quarter_second() -> None:
    b = BlinkSchedule()
    starts = b.starts
    gaps = np.diff(starts)
    groups = starts[np.concatenate([[True], gaps > 0.6])]  # a double blink (~0.35 s apart) is one group
    between = np.diff(groups)
    assert 2.5 < between.mean() < 6.0 and between.min() >= 1.4
    assert 0.03 < np.mean(gaps < 0.6) < 0.25  # some double blinks
    assert 0.2 < b.duration_s < 0.4
    ts = np.arange(0, 60, 0.01)
    c = np.array([b.closure(t) for t in ts])
    assert c.min() == 0.0 and c.max() == 1.0
    assert 0.02 < np.mean(c > 0.5) < 0.08  # eyes mostly open
    assert b.closure(12.345) == BlinkSchedule().closure(12.345)  # deterministic


def test_a_blink_closes_only_the_eyes(face_image) -> None:
    img, face = face_image
    still = dict(sway_deg=0.0, breath_scale=0.0, breath_lift_px=0.0, head_drift=0.0, head_roll_deg=0.0)
    idle = IdleMotion(256, 256, face=face, **still)
    t_shut = float(idle.blinks.starts[2]) + BlinkSchedule.CLOSE_S + 0.01
    assert idle.closure(t_shut) == 1.0
    open_ = idle.apply(img.copy(), float(idle.blinks.starts[2]) - 0.5).copy()
    shut = idle.apply(img.copy(), t_shut).copy()
    assert np.array_equal(open_, img)  # no motion asked for, eyes open: the frame is untouched
    diff = np.abs(shut.astype(int) - img).sum(2)
    mask = np.zeros(diff.shape, bool)
    for x0, y0, x1, y1 in face.eye_boxes():
        mask[y0:y1, x0:x1] = True
        assert diff[y0:y1, x0:x1].mean() > 5  # the lid came down
    assert diff[~mask].max() == 0  # nothing else moved


def test_head_moves_the_face_not_the_corners_and_slowly(face_image) -> None:
    img, face = face_image
    idle = IdleMotion(256, 256, face=face, sway_deg=0.0, breath_scale=0.0, breath_lift_px=0.0, blink=False)
    frames = [idle.apply(img.copy(), 30.0 + k / 25).copy() for k in range(75)]
    moved = [np.abs(f.astype(int) - img).mean(2) for f in frames]
    cx, cy = (int(v) for v in face.center)
    assert max(m[cy - 10:cy + 10, cx - 10:cx + 10].mean() for m in moved) > 3  # the head moves
    assert max(m[:8, :8].max() for m in moved) == 0 and max(m[-8:, -8:].max() for m in moved) == 0
    steps = [np.abs(a.astype(int) - b).mean() for a, b in zip(frames, frames[1:])]
    assert max(steps) < 2.0  # no frame jumps
    dx, dy, roll = idle.head_pose(30.0)
    assert abs(dx) < 0.05 * face.face_h and abs(np.degrees(roll)) < 2.0
    assert IdleMotion(256, 256, face=face).apply(img.copy(), 7.7).tobytes() == \
        IdleMotion(256, 256, face=face).apply(img.copy(), 7.7).tobytes()  # a pure function of time


def test_idle_motion_is_cheap(face_image) -> None:
    img, face = face_image
    idle = IdleMotion(512, 512, face=FaceGeometry.from_mouth_box((208, 300, 304, 352)))
    big = np.ascontiguousarray(np.repeat(np.repeat(img, 2, 0), 2, 1))
    t0 = time.perf_counter()
    for k in range(50):
        idle.apply(big.copy(), 3.0 + k / 25)
    per_frame = (time.perf_counter() - t0) / 50
    assert per_frame < 0.025  # ~1.5-3 ms measured (benchmarks/results/kiosk.json); generous on a busy machine


def test_speech_to_idle_has_no_jump(engine, avatar) -> None:
    """The kiosk's frame step with blinks and head motion: speech, then silence.  Outside the
    mouth, a frame at the end of speech changes no more than idle frames do from one to the
    next; in the mouth, the closing is no bigger a step than speech itself makes."""
    from realtime.audio_io import load_audio
    from realtime.clock import ManualClock
    from realtime.frame_step import FrameStep
    from realtime.session import Session

    class Sink:
        frames_sent = frames_repeated = 0
        backlog_s = 0.0

        def __init__(self) -> None:
            self.frames: list[np.ndarray] = []

        def deliver(self, planes, meta=None) -> None:  # noqa: ANN001
            self.frames.append(planes.copy())

        def clear(self) -> None:
            pass

        def stop(self) -> None:
            pass

    speech = load_audio(HELLO)[: 16000 * 2]
    step = FrameStep(engine, max_batch=8, max_lag=1000)
    rows = step.add_avatar(avatar)
    step.renderers[avatar.name].idle = IdleMotion.for_avatar(avatar, detect=False)
    clock = ManualClock(0.0)
    video, audio = Sink(), Sink()
    s = Session("s", avatar.name, rows, clock, video, audio, engine.convention, max_queue_s=float("inf"))
    s.speak(speech)
    step.add(s)
    n = 100  # 2 s of speech, 2 s of silence
    while s.stats.frames_rendered < n:
        last = min(s.stats.frames_rendered + 8, n) - 1
        clock.set(last / 25)
        step.begin(last / 25)
        job = step.plan(last / 25, max_per_session=last + 1 - s.stats.frames_rendered)
        step.deliver(job, step.render(job), clock.now())
    h, w = avatar.frames.shape[1:3]
    ys = [f[:h].astype(np.int16) for f in video.frames]  # the Y planes
    x0, y0, x1, y1 = (int(v) for v in avatar.mouth_boxes[0])
    outside = np.ones((h, w), bool)
    outside[y0 - 4:y1 + 4, x0 - 4:x1 + 4] = False
    out_steps = np.array([np.abs(b - a)[outside].mean() for a, b in zip(ys, ys[1:])])
    in_steps = np.array([np.abs(b - a)[y0:y1, x0:x1].mean() for a, b in zip(ys, ys[1:])])
    openings = np.array(s.stats.openings)
    assert openings[:50].max() > 0.3 and openings[-20:].max() < 0.1  # it spoke, then rested
    transition = slice(45, 65)  # the end of speech, where the mouth closes
    idle_steps = out_steps[70:]
    assert out_steps[transition].max() <= 2 * np.percentile(idle_steps, 95) + 0.5
    assert in_steps[transition].max() <= in_steps[5:45].max() + 0.5
