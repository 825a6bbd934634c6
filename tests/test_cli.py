"""The command line as a user meets it: help, import rules, errors that name the fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, env_home: Path | None = None) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ)
    if env_home is not None:
        env["LIPSTREAM_HOME"] = str(env_home)
    return subprocess.run([sys.executable, "-m", "realtime.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_serving_path_never_imports_torch():
    code = ("import sys, realtime.cli, realtime.render, realtime.scheduler, engines.factory, "
            "engines.onnxruntime_engine, export.avatar; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("command", ["render", "prepare", "export"])
def test_help_explains_each_command(command):
    out = _run(command, "--help")
    assert out.returncode == 0
    assert "usage: lipstream" in out.stdout and "--" in out.stdout


def test_missing_audio_file_is_a_clear_error(tmp_path):
    out = _run("render", "--audio", str(tmp_path / "nope.wav"), "--out", str(tmp_path / "o.mp4"), env_home=tmp_path)
    assert out.returncode == 2
    assert "error:" in out.stderr and "nope.wav" in out.stderr
    assert "Traceback" not in out.stderr


def test_not_audio_is_a_clear_error(tmp_path):
    bad = tmp_path / "speech.wav"
    bad.write_text("this is not a wav file")
    out = _run("render", "--audio", str(bad), "--out", str(tmp_path / "o.mp4"), env_home=tmp_path)
    assert out.returncode == 2
    assert "not a readable audio file" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "o.mp4").exists()


def test_unknown_avatar_names_the_prepare_command(tmp_path):
    out = _run("render", "--audio", str(ROOT / "realtime/samples/hello.wav"), "--avatar", "nobody",
               "--out", str(tmp_path / "o.mp4"), env_home=tmp_path)
    assert out.returncode == 2
    assert "lipstream prepare" in out.stderr and "Traceback" not in out.stderr


def test_render_sample_end_to_end(tmp_path):
    out_mp4 = tmp_path / "hello.mp4"
    out = _run("render", "--audio", str(ROOT / "realtime/samples/hello.wav"), "--out", str(out_mp4),
               env_home=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "x real time" in out.stdout
    assert out_mp4.stat().st_size > 10_000
    assert (tmp_path / "avatars" / "default" / "manifest.json").is_file()  # prepared on first use
