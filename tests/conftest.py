"""Shared fixtures: a short synthesised speech recording (once per session); per test module, the
default engine and the built-in avatar."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

SPEECH_TEXT = "Please bring the wide blue map. We will meet at the old mill before noon."


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~4 s English sentence as a WAV (espeak-ng: 22.05 kHz mono int16; else flite: 16 kHz).

    Not 16 kHz on purpose when espeak-ng is there, so loading it exercises resampling.
    """
    out = tmp_path_factory.mktemp("speech") / "speech.wav"
    if shutil.which("espeak-ng"):
        cmd = ["espeak-ng", "-w", str(out), SPEECH_TEXT]
    elif shutil.which("flite"):
        cmd = ["flite", "-t", SPEECH_TEXT, "-o", str(out)]
    else:
        pytest.skip("needs espeak-ng or flite to synthesise speech (apt-get install espeak-ng)")
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    if not out.is_file() or out.stat().st_size <= 44:
        pytest.skip(f"{cmd[0]} produced no audio")
    return out


@pytest.fixture(scope="session")
def speech_16k(speech_wav: Path) -> np.ndarray:
    """The speech fixture as float32 mono 16 kHz samples."""
    from realtime.audio_io import load_audio

    return load_audio(speech_wav)


@pytest.fixture(scope="module")
def engine():
    """The engine ``auto`` picks here, fresh per module (modules add avatars to it)."""
    from engines.factory import create_engine

    return create_engine()


@pytest.fixture(scope="module")
def avatar():
    """The built-in astronaut avatar, prepared on first use."""
    from export.avatar import ensure_default_avatar

    return ensure_default_avatar()
