"""What ``lipstream kiosk`` was asked to do: its configuration, the playlist, its errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["KioskConfig", "KioskError", "playlist_files", "is_none", "config_from_args", "AUDIO_SUFFIXES"]

AUDIO_SUFFIXES = {".wav", ".mp3", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".aif", ".aiff", ".webm"}


class KioskError(RuntimeError):
    """The kiosk cannot run as asked; ``code`` is the exit status (2 config, 3 device lost)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class KioskConfig:
    input: str | None = None  # device name/index; None: the default; "none": no microphone
    output: str | None = None  # device name/index; None: the default; "none": no speaker
    play: list[Path] = field(default_factory=list)  # files or folders to speak, in order
    loop_playlist: bool = False
    http_port: int | None = None  # POST /speak, /interrupt; GET /status
    http_host: str = "127.0.0.1"
    barge_in: bool = False
    barge_in_s: float = 0.3  # this much speech on the mic (of the last 0.4 s) interrupts
    resume_s: float = 1.0  # after a barge-in, the playlist resumes once the mic is quiet this long
    avatar: str = "default"
    avatars_dir: Path | None = None
    engine: str = "auto"
    model_dir: Path | None = None
    idle_motion: bool = True
    fullscreen: bool = True
    scale: float = 1.0  # window scale when not full screen
    max_lag_frames: int = 2
    exit_when_done: bool = False
    status_file: Path | None = None
    reconnect_s: float = 10.0
    first_audio_s: float = 5.0  # a fresh stream may take this long to deliver its first callback
    stall_s: float = 4.0  # no callback for this long (after the first) = the device is gone; PortAudio's
    # ALSA->PulseAudio path pauses callbacks for ~2 s after an underrun, so shorter would cry wolf
    output_latency_s: float = 0.1  # PortAudio output latency: 'low' (~9 ms) underruns on a busy machine
    speaker_cushion_s: float = 0.08  # audio queued before the speaker (re)starts: one late tick (80 ms) never cuts it
    title: str = "lipstream"

    @property
    def presenter(self) -> bool:
        return bool(self.play) or self.http_port is not None

    @property
    def wants_mic(self) -> bool:
        return (not self.presenter or self.barge_in) and not is_none(self.input)

    @property
    def wants_speaker(self) -> bool:
        return not is_none(self.output)


def is_none(spec: str | None) -> bool:
    return isinstance(spec, str) and spec.strip().lower() in ("none", "off", "-")


def playlist_files(paths: list[Path]) -> list[Path]:
    """Files in order: a file as given, a folder's audio files sorted by name (not recursive)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted((f for f in p.iterdir() if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES),
                           key=lambda f: f.name)
            if not found:
                raise KioskError(f"--play {p}: the folder holds no audio files ({', '.join(sorted(AUDIO_SUFFIXES))})")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise KioskError(f"--play {p}: no such file or folder")
    return out


def config_from_args(args) -> KioskConfig:  # noqa: ANN001 - argparse.Namespace of `lipstream kiosk`
    return KioskConfig(input=args.input, output=args.output, play=list(args.play or []), loop_playlist=args.loop,
                       http_port=args.http, http_host=args.http_host, barge_in=args.barge_in, avatar=args.avatar,
                       avatars_dir=args.avatars_dir, engine=args.engine, model_dir=args.model,
                       idle_motion=not args.no_idle_motion, fullscreen=not args.windowed, scale=args.scale,
                       max_lag_frames=args.max_lag_frames, exit_when_done=args.exit_when_done,
                       status_file=args.status_file, reconnect_s=args.reconnect_s,
                       output_latency_s=args.output_latency_ms / 1000.0)
