"""The kiosk end to end on virtual devices: a private PulseAudio (null sinks ``mic_src``, the
microphone, and ``out``, the speaker) and an Xvfb screen, started here and stopped after.

- mic mode: speech played into the virtual mic moves the mouth on screen (screenshots of the
  mouth box, speech against silence) and comes out of the speaker (``out.monitor`` recording);
  the audio server dies and comes back: the kiosk reconnects; it dies for good: the kiosk exits 3
  with a message, it does not hang;
- presenter mode: a playlist speaks, speech on the mic barges in, speech pushed over HTTP speaks.

Skipped, with the reason, without the Debian packages (``make test`` installs them: TEST_DEBS).
The virtual path has about a second of its own delay (DESIGN.md), so the waits here are generous
and nothing asserts a latency (benchmarks/bench_kiosk.py measures those).
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from benchmarks.bench_kiosk import (VirtualRig, read_status, rms_dbfs, start_kiosk, stop_process,
                                    wait_status)

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "realtime" / "samples" / "hello.wav"

pytestmark = pytest.mark.skipif(VirtualRig.missing() is not None,
                                reason=f"virtual audio/display rig: {VirtualRig.missing()}")


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("mss", reason="screenshots need mss (pip install mss)")
    r = VirtualRig(tmp_path_factory.mktemp("kiosk-rig"))
    try:
        r.start()
    except Exception as exc:  # noqa: BLE001 - a machine where the daemons cannot run at all
        r.stop()
        pytest.skip(f"the virtual rig did not start: {exc}")
    yield r
    r.stop()


def _wav(path: Path, x: np.ndarray, rate: int = 16000) -> Path:
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype(np.int16).tobytes())
    return path


def _mouth_activity(rig: VirtualRig, box: list[int], seconds: float) -> float:
    """How much the mouth box changes on screen over ``seconds`` (mean |frame - median|)."""
    region = {"left": box[0], "top": box[1], "width": box[2] - box[0], "height": box[3] - box[1]}
    shots = []
    with rig.grabber() as sct:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            shots.append(np.asarray(sct.grab(region))[..., :3].astype(np.int16))
            time.sleep(0.03)
    stack = np.stack(shots)
    return float(np.abs(stack - np.median(stack, axis=0)).mean())


def _running(st: dict) -> bool:
    return st.get("state") == "running" and (st.get("display") or {}).get("frames_shown", 0) > 25


def test_mic_moves_the_mouth_and_the_speech_comes_out_and_a_lost_device_is_handled(rig, tmp_path: Path) -> None:
    status = tmp_path / "status.json"
    proc = start_kiosk(rig, status, "--no-idle-motion", "--reconnect-s", "8", log=tmp_path / "kiosk.log")
    try:
        st = wait_status(status, proc, _running, 120, "the kiosk to show frames")
        assert st["mode"] == "mic" and st["window"]["size"] == list(rig.size)  # full screen
        box = st["window"]["mouth_box_screen"]
        rec = rig.record_output()
        wait_status(status, proc, lambda s: (s.get("mic") or {}).get("callbacks", 0) > 0, 30, "the microphone")
        silent = _mouth_activity(rig, box, 1.5)
        t_speech = time.monotonic()
        player = rig.play_into_mic(HELLO)
        time.sleep(1.0)  # the virtual path's own delay
        speaking = _mouth_activity(rig, box, 4.0)
        player.wait(15)
        time.sleep(1.5)
        out = rec.stop()
        st = read_status(status)
        assert st["mic_s"] > 3.0, st  # the mic was heard
        assert speaking > 3 * silent + 1.0, (speaking, silent)  # the lips moved on screen
        # the speaker played the speech: loud while it was spoken, quiet before it
        rate = 16000
        before = out[: int((t_speech - rec.started_at) * rate)]
        loud = np.array([rms_dbfs(out[i:i + rate // 4]) for i in range(0, out.size - rate // 4, rate // 4)])
        assert (loud > -35).sum() >= 8, loud.round(1)  # >= 2 s of speech came out
        assert before.size == 0 or rms_dbfs(before) < -50, rms_dbfs(before)
        skew = st["display"]["av_skew"]
        assert skew is not None and skew["n"] > 50, st["display"]  # frames shown on their sound's DAC time
        # the audio server goes away and comes back: the kiosk reconnects and carries on
        rig.stop_pulse()
        wait_status(status, proc, lambda s: s.get("reconnects", 0) >= 1, 30, "a reconnect attempt")
        rig.start_pulse()
        st = wait_status(status, proc, lambda s: s.get("state") == "running" and s.get("reconnects", 0) >= 1
                         and (s.get("mic") or {}).get("callbacks", 0) > 10, 40, "the reconnected microphone")
        shown = st["display"]["frames_shown"]
        st = wait_status(status, proc, lambda s: s["display"]["frames_shown"] > shown + 25, 30, "frames after it")
        # ... and goes away for good: a message and exit 3 within --reconnect-s, no hang
        rig.stop_pulse()
        code = proc.wait(60)
        log = (tmp_path / "kiosk.log").read_text(errors="replace")
        assert code == 3, log[-3000:]
        assert "disappeared and did not come back" in log and "Audio devices now" in log
    finally:
        stop_process(proc)
        if not rig.pulse_running():
            rig.start_pulse()


def test_presenter_playlist_barge_in_and_http_speech(rig, tmp_path: Path) -> None:
    """A playlist of two files speaks; speech on the mic interrupts the first; once the mic is
    quiet the second plays; speech pushed over HTTP plays; the q key quits (exit 0)."""
    from realtime.audio_io import load_audio

    speech = load_audio(HELLO)
    first = _wav(tmp_path / "1-long.wav", np.concatenate([speech, speech]))  # ~14 s
    second = _wav(tmp_path / "2-short.wav", speech[: int(1.8 * 16000)])
    interjection = _wav(tmp_path / "interjection.wav", speech[: int(1.6 * 16000)])
    pushed = _wav(tmp_path / "pushed.wav", speech[: int(2.5 * 16000)])
    status = tmp_path / "status.json"
    port = 20000 + (int(time.time() * 1000) % 20000)
    proc = start_kiosk(rig, status, "--play", str(first), "--play", str(second), "--barge-in", "--http", str(port),
                       log=tmp_path / "kiosk.log")
    try:
        st = wait_status(status, proc, lambda s: _running(s) and s.get("speaking"), 120, "the playlist to speak")
        assert st["mode"] == "presenter" and st["playlist"]["index"] == 0
        wait_status(status, proc, lambda s: (s.get("mic") or {}).get("callbacks", 0) > 0, 30, "the microphone")
        rec = rig.record_output()
        time.sleep(2.0)
        t_barge = time.monotonic()
        rig.play_into_mic(interjection).wait(15)
        st = wait_status(status, proc, lambda s: s.get("barge_ins", 0) >= 1, 20, "the barge-in")
        t_stopped = st["last_barge_in_at"]  # the kiosk's clock is this one (time.monotonic)
        assert st["queued_s"] == 0.0 and st["playlist"]["index"] == 0  # the first file was interrupted
        st = wait_status(status, proc, lambda s: s["playlist"]["index"] == 1 and s.get("speaking"), 20,
                         "the playlist to go on once the mic is quiet")
        t_resumed = time.monotonic()
        assert st["barge_ins"] == 1
        wait_status(status, proc, lambda s: not s.get("speaking"), 20, "the second file to end")
        req = urllib.request.Request(f"http://127.0.0.1:{port}/speak", data=pushed.read_bytes(),
                                     headers={"Content-Type": "audio/wav"}, method="POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            reply = json.loads(r.read())
        assert reply["duration_s"] == pytest.approx(2.5, abs=0.05)
        t_pushed = time.monotonic()
        time.sleep(3.5)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=30) as r:
            assert json.loads(r.read())["state"] == "running"
        out = rec.stop()
        if rig.press_key("q"):  # the quit key ends the kiosk (exit 0)
            proc.wait(30)
        rate = 16000

        def level(a: float, b: float) -> float:
            return rms_dbfs(out[max(0, int((a - rec.started_at) * rate)):int((b - rec.started_at) * rate)])

        assert level(rec.started_at, t_barge) > -35  # the first file was speaking
        assert t_resumed - t_stopped > 1.0
        assert level(t_stopped + 0.4, t_resumed - 0.3) < -45  # silent after the barge-in
        assert level(t_resumed, t_resumed + 1.5) > -35  # the second file
        assert level(t_pushed + 0.3, t_pushed + 2.5) > -35  # the pushed speech
    finally:
        code = stop_process(proc)
    assert code == 0, (tmp_path / "kiosk.log").read_text(errors="replace")[-3000:]
