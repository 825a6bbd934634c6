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


# What `serve` (and `render`) load.  The check runs in a fresh interpreter: this one has torch.
_SERVING_IMPORTS = ("realtime.cli", "realtime.server", "realtime.render", "realtime.scheduler", "engines.factory",
                    "engines.onnxruntime_engine", "export.avatar")
_TORCH_GUARD = """
import contextlib, io, sys
import {modules}
from realtime.cli import build_parser, main
build_parser().parse_args(["serve", "--port", "9"])
with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    main(["serve", "--help"])
print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
import torch  # the control: the check above would have seen it
print("torch" in sys.modules)
"""


def test_serving_path_never_imports_torch():
    pytest.importorskip("torch", reason="the control imports torch (the test install has it)")
    code = _TORCH_GUARD.format(modules=", ".join(_SERVING_IMPORTS))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    loaded, control = out.stdout.strip().splitlines()[-2:]
    assert loaded == "[]", f"the serving path imported {loaded}"
    assert control == "True"


def _subcommands() -> dict:
    import argparse

    from realtime.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


# Options a user of each command relies on (the docs and the Makefile use them); the parser may
# have more, and its help must name every one it has.
_CORE_OPTIONS = {
    "render": {"--audio", "--out", "--avatar", "--avatars-dir", "--model", "--engine", "--batch", "--no-idle-motion"},
    "prepare": {"source", "--name", "--avatars-dir", "--max-frames", "--crop-size", "--model"},
    "export": {"--out", "--fp16", "--weights", "--from", "checkpoint"},
    "build-engine": {"onnx", "--max-batch", "--cache-dir", "--force"},
    "serve": {"--host", "--port", "--max-sessions", "--codec", "--avatar", "--model", "--engine", "--stun",
              "--render-when"},
    "kiosk": {"--input", "--output", "--list-devices"},
    "train": {"data_dir", "--out", "--config", "--steps", "--sync", "--vgg19", "--resume", "--cache", "--device"},
    "train-sync": {"data_dir", "--out", "--config", "--steps", "--resume", "--cache", "--device"},
}


def test_every_command_is_listed_in_the_top_level_help():
    out = _run("--help")
    assert out.returncode == 0 and "usage: lipstream" in out.stdout
    assert set(_subcommands()) == set(_CORE_OPTIONS) | {"bench"}
    for command in _subcommands():
        assert command in out.stdout, command


@pytest.mark.parametrize("command", sorted(_CORE_OPTIONS))
def test_help_names_each_option_of_the_command(command):
    parser = _subcommands()[command]
    options = {s for a in parser._actions for s in a.option_strings if s.startswith("--") and s != "--help"}
    positionals = {a.dest for a in parser._actions if not a.option_strings}
    assert _CORE_OPTIONS[command] <= options | positionals, _CORE_OPTIONS[command] - options - positionals
    out = _run(command, "--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"usage: lipstream {command}"), out.stdout[:200]
    for name in sorted(options | positionals):
        assert name in out.stdout, f"`lipstream {command} --help` does not name {name}"
    for a in parser._actions:  # every choice is spelled out, every option explained
        if a.option_strings and a.choices:
            for choice in a.choices:
                assert str(choice) in out.stdout, (a.dest, choice)
        if a.dest != "help":
            assert a.help, f"{command} {a.dest} has no help text"
    required = [a for a in parser._actions if a.required and a.option_strings]
    usage = out.stdout.split("\n\n")[0]
    for a in required:  # required options appear in the usage line itself
        assert a.option_strings[-1] in usage, a.option_strings


def test_wrong_options_are_refused_before_anything_runs():
    out = _run("serve", "--no-such-option")
    assert out.returncode == 2 and "unrecognized arguments: --no-such-option" in out.stderr
    out = _run("serve", "--codec", "vp9")
    assert out.returncode == 2
    assert "usage: lipstream serve" in out.stderr and "--codec" in out.stderr and "vp9" in out.stderr
    out = _run("render", "--out", "x.mp4")  # --audio is required
    assert out.returncode == 2 and "--audio" in out.stderr and "Traceback" not in out.stderr


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
