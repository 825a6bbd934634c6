"""One uploaded avatar prepared in a process of its own, under limits: ``python -m realtime.avatar_worker``.

The server (``realtime/avatar_upload.py``) starts it per upload, so that a crafted file — a
decompression bomb, a video that decodes forever, a file that crashes a decoder — costs at most
this process.  Before anything heavy is imported it sets, with ``resource.setrlimit``:
``RLIMIT_AS`` (address space, ``--memory-mb``), ``RLIMIT_CPU`` (``--cpu-s``; SIGXCPU, then SIGKILL),
``RLIMIT_FSIZE`` (no file it writes may pass ``--max-output-mb``), ``RLIMIT_CORE`` 0; and lowers
its priority (nice 10) so live sessions keep the CPU.  The server also kills it past its wall-clock
timeout.

It speaks JSON lines on stdout: ``{"progress": 0..1}`` while it works, then ``{"ready": true,
"frames": n}`` or ``{"error": "a message for the uploader"}`` (exit status 2; never a traceback:
that goes to stderr, which the server logs).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

__all__ = ["main", "apply_limits"]

MB = 1 << 20


def _say(**message: object) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def apply_limits(memory_mb: int, cpu_s: int, max_output_mb: int) -> None:
    for limit, value in ((resource.RLIMIT_AS, memory_mb * MB), (resource.RLIMIT_CPU, cpu_s),
                         (resource.RLIMIT_FSIZE, max_output_mb * MB), (resource.RLIMIT_CORE, 0)):
        soft, hard = resource.getrlimit(limit)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        hard_value = value + 5 if limit == resource.RLIMIT_CPU and hard == resource.RLIM_INFINITY else value
        resource.setrlimit(limit, (value, hard_value))  # CPU: SIGXCPU at the soft limit, SIGKILL 5 s later
    try:
        os.nice(10)
    except OSError:
        pass


def video_seconds(path: Path) -> float | None:
    """A video's duration from its container (None for an image or when it does not say)."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            return container.duration / 1e6 if container.duration else None
    except av.error.FFmpegError:
        return None


class _Progress:
    def __init__(self) -> None:
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done >= total or now - self._last > 0.2:
            self._last = now
            _say(progress=round(0.9 * done / max(total, 1), 3))


def _prepare(args: argparse.Namespace) -> int:
    from engines.avatar import AvatarError
    from export.avatar import read_source  # noqa: F401 - fail early if the preparation cannot import

    kind = args.kind
    if kind == "video":
        seconds = video_seconds(args.source)
        if seconds is not None and seconds > args.max_seconds + 0.2:  # a few frames of slack
            _say(error=f"the video is {seconds:.1f} s long; the limit is {args.max_seconds:g} s: trim it")
            return 2
    from export.avatar import prepare_avatar

    try:
        prepare_avatar(args.source, args.name, args.avatars_dir, progress=_Progress(),
                       max_frames=max(1, int(args.max_seconds * 25)), model_dir=args.model)
    except AvatarError as exc:
        message = str(exc).replace(str(args.source), f"the uploaded {kind}")
        _say(error=message)
        return 2
    from engines.avatar import load_avatar

    _say(progress=1.0, ready=True, frames=load_avatar(args.name, args.avatars_dir).n_frames)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m realtime.avatar_worker", description=__doc__.split("\n\n")[0])
    p.add_argument("--source", type=Path, required=True)
    p.add_argument("--kind", choices=("image", "video"), required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--avatars-dir", type=Path, required=True)
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--max-seconds", type=float, default=20.0)
    p.add_argument("--memory-mb", type=int, default=3072)
    p.add_argument("--cpu-s", type=int, default=300)
    p.add_argument("--max-output-mb", type=int, default=1024)
    args = p.parse_args(argv)
    apply_limits(args.memory_mb, args.cpu_s, args.max_output_mb)
    try:
        return _prepare(args)
    except Exception as exc:  # a message for the uploader; the traceback only on stderr (the server's log)
        import traceback

        traceback.print_exc()
        if isinstance(exc, MemoryError) or "Insufficient memory" in str(exc) or "Failed to allocate" in str(exc):
            _say(error=f"preparing this {args.kind} needs more than the {args.memory_mb} MB memory limit "
                       "(too many pixels or frames): send a smaller one")
        else:
            _say(error=f"the {args.kind} could not be prepared ({exc.__class__.__name__})")
        return 2


if __name__ == "__main__":
    sys.exit(main())
