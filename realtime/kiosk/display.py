"""The kiosk's screen: the window process and the parent's end of it.

The window (:class:`~realtime.kiosk.xwindow.XWindow`: plain Xlib, full screen, the avatar
letterboxed) lives in a **child process**, ``python -m realtime.kiosk.display``, that imports
only numpy, OpenCV (colour conversion, resizing) and libX11; :class:`ScreenProcess` is the
kiosk's end.  In a child, a stuck or dying X connection (Xlib ends the process when its server
goes away) can neither hang nor kill the kiosk: the kiosk hears of it and exits with a message.
An X display is needed (``DISPLAY``; XWayland counts): :func:`check_display` says how to get one.

The pipe protocol: the parent writes a 12-byte header (magic, frame id, payload length, all
little-endian uint32) and the I420 planes; the child shows the frame at once and answers one
line ``shown ID MONOTONIC`` (``time.monotonic`` is one clock for every process on the machine);
it also writes ``ready JSON`` (window geometry) once, ``info JSON`` when the geometry changes,
and ``quit``/``closed`` on Esc/q or a closed window.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import logging
import os
import select
import struct
import subprocess
import sys
import threading
import time
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["DisplayError", "ScreenProcess", "check_display", "screen_size", "map_box"]

MAGIC = 0x4B534C50  # "PLSK"
HEADER = struct.Struct("<III")



class DisplayError(RuntimeError):
    """No screen to show the avatar on; the message says how to get one."""


def _x11():  # noqa: ANN202
    name = ctypes.util.find_library("X11") or "libX11.so.6"
    lib = ctypes.CDLL(name)
    lib.XOpenDisplay.restype = ctypes.c_void_p
    lib.XOpenDisplay.argtypes = [ctypes.c_char_p]
    lib.XDefaultScreen.argtypes = [ctypes.c_void_p]
    lib.XDisplayWidth.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.XDisplayHeight.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.XCloseDisplay.argtypes = [ctypes.c_void_p]
    return lib


def screen_size() -> tuple[int, int] | None:
    """(width, height) of the X screen ``DISPLAY`` names, or None if it cannot be reached."""
    try:
        lib = _x11()
    except OSError:
        return None
    dpy = lib.XOpenDisplay(None)
    if not dpy:
        return None
    try:
        scr = lib.XDefaultScreen(dpy)
        return int(lib.XDisplayWidth(dpy, scr)), int(lib.XDisplayHeight(dpy, scr))
    finally:
        lib.XCloseDisplay(dpy)


def check_display() -> tuple[int, int]:
    """The screen size; DisplayError when there is no X display to draw on."""
    name = os.environ.get("DISPLAY")
    if not name:
        raise DisplayError("no display: DISPLAY is not set. Run the kiosk in a desktop session, or start an X "
                           "server first (e.g. `xinit` on a kiosk machine, `Xvfb :1 & export DISPLAY=:1` headless)")
    size = screen_size()
    if size is None:
        raise DisplayError(f"cannot open the X display {name!r} (is the X server running, and may this user "
                           "connect to it? see `xhost`/XAUTHORITY)")
    return size


def map_box(box: tuple[int, int, int, int], origin: tuple[int, int], rect: tuple[int, int, int, int],
            frame_wh: tuple[int, int]) -> tuple[int, int, int, int]:
    """A box in frame pixels -> screen pixels, for a window image at ``origin`` showing the frame
    letterboxed at ``rect`` (x, y, w, h inside the image)."""
    ox, oy = origin
    x, y, w, h = rect
    sx, sy = w / frame_wh[0], h / frame_wh[1]
    x0, y0, x1, y1 = box
    return (int(ox + x + x0 * sx), int(oy + y + y0 * sy), int(round(ox + x + x1 * sx)), int(round(oy + y + y1 * sy)))


class ScreenProcess:
    """The parent's end of the window: frames down a pipe, ``shown``/key events back.

    :meth:`show` never blocks for long: frames go through a one-slot mailbox to a writer thread
    (a newer frame replaces one not yet written).  ``on_shown(frame_id, t)`` and
    ``on_event(name)`` are called on a reader thread; the events are "quit" (Esc/q), "closed" (the
    window was closed) and "died" (the window process failed, e.g. the X server went away).
    """

    def __init__(self, frame_w: int, frame_h: int, *, title: str = "lipstream", fullscreen: bool = True,
                 scale: float = 1.0, on_shown: Callable[[int, float], None] | None = None,
                 on_event: Callable[[str], None] | None = None) -> None:
        self.frame_wh = (int(frame_w), int(frame_h))
        self.title, self.fullscreen, self.scale = title, fullscreen, scale
        self.on_shown = on_shown
        self.on_event = on_event
        self.info: dict = {}
        self.proc: subprocess.Popen | None = None
        self._ready = threading.Event()
        self._slot: tuple[int, bytes] | None = None
        self._slot_cv = threading.Condition()
        self._closing = False
        self.write_started = 0.0  # when the write in progress began (0: none): a hung child shows here
        self.frames_written = 0
        self.exit_code: int | None = None  # the window process's, once it is gone

    def start(self, timeout_s: float = 30.0) -> dict:
        """Start the window process; its geometry once the window is up. DisplayError if it fails."""
        check_display()
        cmd = [sys.executable, "-m", "realtime.kiosk.display", "--title", self.title,
               "--frame", f"{self.frame_wh[0]}x{self.frame_wh[1]}", "--scale", str(self.scale)]
        if not self.fullscreen:
            cmd.append("--windowed")
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, bufsize=0)
        threading.Thread(target=self._read, name="lipstream-screen-read", daemon=True).start()
        threading.Thread(target=self._write, name="lipstream-screen-write", daemon=True).start()
        if not self._ready.wait(timeout_s) or not self.info:
            code = self.proc.poll()
            self.close()
            how = f"exited with {code}" if code is not None else "hung"
            raise DisplayError(f"the window did not open (display process {how}"
                               f"; DISPLAY={os.environ.get('DISPLAY')!r})")
        return self.info

    def show(self, frame_id: int, planes: np.ndarray) -> None:
        with self._slot_cv:
            self._slot = (frame_id, np.ascontiguousarray(planes).tobytes())
            self._slot_cv.notify()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def hung(self, now: float, limit_s: float = 5.0) -> bool:
        """A frame write has been stuck for ``limit_s``: the window process stopped reading."""
        return bool(self.write_started) and now - self.write_started > limit_s

    def _write(self) -> None:
        proc = self.proc
        while True:
            with self._slot_cv:
                while self._slot is None and not self._closing:
                    self._slot_cv.wait(0.5)
                if self._closing:
                    return
                frame_id, data = self._slot
                self._slot = None
            try:
                self.write_started = time.monotonic()
                proc.stdin.write(HEADER.pack(MAGIC, frame_id & 0xFFFFFFFF, len(data)) + data)
                self.frames_written += 1
            except (BrokenPipeError, OSError, ValueError):
                self._event("closed")
                return
            finally:
                self.write_started = 0.0

    def _read(self) -> None:
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").strip()
            if line.startswith("shown "):
                try:
                    _, fid, t = line.split()
                    if self.on_shown is not None:
                        self.on_shown(int(fid), float(t))
                except ValueError:
                    pass
            elif line.startswith("ready "):
                try:
                    self.info = json.loads(line[6:])
                except ValueError:
                    self.info = {}
                self._ready.set()
            elif line.startswith("info "):
                try:
                    self.info.update(json.loads(line[5:]))
                except ValueError:
                    pass
            elif line in ("quit", "closed"):
                self._event(line)
        self._ready.set()
        if not self._closing:
            code = None
            with contextlib.suppress(subprocess.TimeoutExpired, AttributeError):
                code = self.proc.wait(2.0)
            self.exit_code = code
            self._event("closed" if code in (0, None) else "died")

    def _event(self, name: str) -> None:
        if self.on_event is not None and not self._closing:
            self.on_event(name)

    def close(self, timeout_s: float = 3.0) -> None:
        with self._slot_cv:
            self._closing = True
            self._slot_cv.notify()
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            proc.stdin.close()  # the child exits on EOF
        except OSError:
            pass
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout_s)


def _read_exact(fd: int, n: int, buf: bytearray) -> bool:
    """Fill ``buf[:n]`` from ``fd``; False at end of file."""
    view = memoryview(buf)[:n]
    got = 0
    while got < n:
        k = os.readv(fd, [view[got:]])
        if k == 0:
            return False
        got += k
    return True


def main(argv: list[str] | None = None) -> int:
    """The window process: frames from stdin, on screen at once, ``shown`` lines on stdout."""
    import argparse
    import signal

    from realtime.kiosk.xwindow import XWindow, XWindowError

    p = argparse.ArgumentParser(prog="python -m realtime.kiosk.display")
    p.add_argument("--title", default="lipstream")
    p.add_argument("--frame", required=True, help="WxH of the frames")
    p.add_argument("--windowed", action="store_true")
    p.add_argument("--scale", type=float, default=1.0)
    args = p.parse_args(argv)
    fw, fh = (int(v) for v in args.frame.lower().split("x"))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the kiosk's to handle; it closes us
    out = sys.stdout

    def say(line: str) -> None:
        out.write(line + "\n")
        out.flush()

    def geometry() -> dict:
        return {"size": list(window.size), "rect": list(window.rect), "origin": list(window.origin()),
                "fullscreen": window.fullscreen, "window_manager": window.window_manager}

    window = XWindow(fw, fh, title=args.title, fullscreen=not args.windowed, scale=args.scale)
    try:
        window.open()
    except XWindowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    frame_bytes = fw * fh * 3 // 2
    planes = np.empty((fh * 3 // 2, fw), np.uint8)
    payload = bytearray(frame_bytes)
    header = bytearray(HEADER.size)
    fd = sys.stdin.fileno()
    window.poll()
    window.moved = False
    say("ready " + json.dumps(geometry()))
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], 0.01)
            if ready:
                if not _read_exact(fd, HEADER.size, header):
                    return 0  # the kiosk closed the pipe
                magic, fid, n = HEADER.unpack(header)
                if magic != MAGIC or n != frame_bytes:
                    print(f"error: bad frame header ({magic:#x}, {n} bytes)", file=sys.stderr)
                    return 1
                if not _read_exact(fd, n, payload):
                    return 0
                planes.reshape(-1)[:] = np.frombuffer(payload, np.uint8)
                window.show_i420(planes)
                say(f"shown {fid} {time.monotonic():.6f}")
            event = window.poll()
            if window.moved:
                window.moved = False
                say("info " + json.dumps(geometry()))
            if event is not None:
                say(event)
                return 0
    except (BrokenPipeError, KeyboardInterrupt):
        return 0
    finally:
        window.close()


if __name__ == "__main__":
    raise SystemExit(main())
