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
