"""A full-screen X11 window drawn with plain Xlib (ctypes): the avatar, letterboxed, and its keys.

Why not OpenCV's ``imshow``: its Qt build (1) hangs connecting to X once PyAV is imported (PyAV's
wheel bundles a libxcb and a ``libxcb-shm`` with the very file name OpenCV's Qt loads), and
(2) on an X server without a window manager (a kiosk started by ``xinit``; Xvfb in tests) it
sometimes never painted its window at all — 1 start in 5-10 stayed black here, whatever the
window flags.  Here every frame is pushed with ``XPutImage`` and ``XSync``: there is nothing to
wait for, and when ``XSync`` returns the X server has the pixels.

- Full screen: the window covers the screen at (0, 0) (on a bare X server that is all it takes);
  when a window manager runs, ``_NET_WM_STATE_FULLSCREEN`` is set before mapping, and the size
  the window manager then gives is followed (``ConfigureNotify``).
- Keys: Esc or q -> "quit"; the window manager's close button (``WM_DELETE_WINDOW``) -> "closed".
- The mouse pointer is hidden over the window.
- If the X server goes away, Xlib's I/O error handler ends the process (this runs in the kiosk's
  window process, so the kiosk sees it and exits with a message).

One thread only (Xlib is not initialised for threads).  Frames are converted with OpenCV
(I420 -> BGRA, resize) into a 32-bit ZPixmap of the window's size.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import cv2
import numpy as np

__all__ = ["XWindow", "XWindowError", "letterbox"]

KEY_PRESS, EXPOSE, CONFIGURE_NOTIFY, CLIENT_MESSAGE = 2, 12, 22, 33
KEY_PRESS_MASK, EXPOSURE_MASK, STRUCTURE_NOTIFY_MASK = 1 << 0, 1 << 15, 1 << 17
ZPIXMAP, PROP_MODE_REPLACE, XA_ATOM = 2, 0, 4
QUIT_KEYSYMS = {0xFF1B, ord("q"), ord("Q")}


class XWindowError(RuntimeError):
    pass


class _XImage(ctypes.Structure):  # the leading fields of Xlib's XImage
    _fields_ = [("width", ctypes.c_int), ("height", ctypes.c_int), ("xoffset", ctypes.c_int),
                ("format", ctypes.c_int), ("data", ctypes.c_void_p), ("byte_order", ctypes.c_int),
                ("bitmap_unit", ctypes.c_int), ("bitmap_bit_order", ctypes.c_int), ("bitmap_pad", ctypes.c_int),
                ("depth", ctypes.c_int), ("bytes_per_line", ctypes.c_int), ("bits_per_pixel", ctypes.c_int)]


class _XColor(ctypes.Structure):
    _fields_ = [("pixel", ctypes.c_ulong), ("red", ctypes.c_ushort), ("green", ctypes.c_ushort),
                ("blue", ctypes.c_ushort), ("flags", ctypes.c_char), ("pad", ctypes.c_char)]


def _lib():  # noqa: ANN202
    name = ctypes.util.find_library("X11") or "libX11.so.6"
    x = ctypes.CDLL(name)
    vp, ul, i, ui = ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_uint
    sig = {
        "XOpenDisplay": (vp, [ctypes.c_char_p]), "XCloseDisplay": (i, [vp]), "XDefaultScreen": (i, [vp]),
        "XRootWindow": (ul, [vp, i]), "XDisplayWidth": (i, [vp, i]), "XDisplayHeight": (i, [vp, i]),
        "XDefaultVisual": (vp, [vp, i]), "XDefaultDepth": (i, [vp, i]), "XBlackPixel": (ul, [vp, i]),
        "XDefaultGC": (vp, [vp, i]),
        "XCreateSimpleWindow": (ul, [vp, ul, i, i, ui, ui, ui, ul, ul]),
        "XStoreName": (i, [vp, ul, ctypes.c_char_p]), "XSelectInput": (i, [vp, ul, ctypes.c_long]),
        "XInternAtom": (ul, [vp, ctypes.c_char_p, i]),
        "XSetWMProtocols": (i, [vp, ul, ctypes.POINTER(ul), i]),
        "XChangeProperty": (i, [vp, ul, ul, ul, i, i, vp, i]),
        "XMapWindow": (i, [vp, ul]), "XMoveWindow": (i, [vp, ul, i, i]),
        "XFlush": (i, [vp]), "XSync": (i, [vp, i]), "XPending": (i, [vp]), "XNextEvent": (i, [vp, vp]),
        "XLookupKeysym": (ul, [vp, i]),
        "XCreateImage": (ctypes.POINTER(_XImage), [vp, vp, ui, i, i, vp, ui, ui, i, i]),
        "XPutImage": (i, [vp, ul, vp, ctypes.POINTER(_XImage), i, i, i, i, ui, ui]),
        "XCreatePixmap": (ul, [vp, ul, ui, ui, ui]),
        "XCreatePixmapCursor": (ul, [vp, ul, ul, ctypes.POINTER(_XColor), ctypes.POINTER(_XColor), ui, ui]),
        "XDefineCursor": (i, [vp, ul, ul]), "XDestroyWindow": (i, [vp, ul]),
        "XTranslateCoordinates": (i, [vp, ul, ul, i, i, ctypes.POINTER(i), ctypes.POINTER(i), ctypes.POINTER(ul)]),
        "XGetWindowProperty": (i, [vp, ul, ul, ctypes.c_long, ctypes.c_long, i, ul, ctypes.POINTER(ul),
                                   ctypes.POINTER(i), ctypes.POINTER(ul), ctypes.POINTER(ul), ctypes.POINTER(vp)]),
        "XFree": (i, [vp]),
    }
    for fn, (res, args) in sig.items():
        f = getattr(x, fn)
        f.restype, f.argtypes = res, args
    return x


def letterbox(frame_wh: tuple[int, int], screen_wh: tuple[int, int]) -> tuple[int, int, int, int]:
    """x, y, w, h of a frame scaled to fit the screen, centred (aspect ratio kept)."""
    fw, fh = frame_wh
    sw, sh = screen_wh
    scale = min(sw / fw, sh / fh)
    w, h = max(2, int(round(fw * scale))), max(2, int(round(fh * scale)))
    return (sw - w) // 2, (sh - h) // 2, w, h


class XWindow:
    def __init__(self, frame_w: int, frame_h: int, *, title: str = "lipstream", fullscreen: bool = True,
                 scale: float = 1.0) -> None:
        self.frame_wh = (int(frame_w), int(frame_h))
        self.title = title
        self.fullscreen = fullscreen
        self.scale = scale
        self.size = self.frame_wh  # the window's size
        self.rect = (0, 0, *self.frame_wh)  # where the frame sits in it
        self.window_manager = False
        self.moved = False  # the geometry changed since the last look (the kiosk re-reads it)
        self._x = None
        self._dpy = None
        self._win = 0
        self._event = ctypes.create_string_buffer(192)  # sizeof(XEvent) on 64-bit
        self._event_p = ctypes.cast(self._event, ctypes.c_void_p)
        self._canvas: np.ndarray | None = None
        self._image = None
        self._delete_atom = 0
        self._closed = False

    # -- opening --------------------------------------------------------------------------------
    def open(self) -> None:
        try:
            self._x = x = _lib()
        except OSError as exc:
            raise XWindowError(f"libX11 is not available ({exc})") from None
        self._dpy = dpy = x.XOpenDisplay(None)
        if not dpy:
            raise XWindowError("cannot open the X display")
        scr = x.XDefaultScreen(dpy)
        root = x.XRootWindow(dpy, scr)
        if x.XDefaultDepth(dpy, scr) not in (24, 32):
            raise XWindowError(f"the X screen has depth {x.XDefaultDepth(dpy, scr)}; 24-bit colour is needed")
        screen = (x.XDisplayWidth(dpy, scr), x.XDisplayHeight(dpy, scr))
        self.window_manager = self._wm_running(root)
        if self.fullscreen:
            self.size = screen
        else:
            self.size = (int(round(self.frame_wh[0] * self.scale)), int(round(self.frame_wh[1] * self.scale)))
        self._win = win = x.XCreateSimpleWindow(dpy, root, 0, 0, self.size[0], self.size[1], 0,
                                                x.XBlackPixel(dpy, scr), x.XBlackPixel(dpy, scr))
        x.XStoreName(dpy, win, self.title.encode())
        x.XSelectInput(dpy, win, KEY_PRESS_MASK | EXPOSURE_MASK | STRUCTURE_NOTIFY_MASK)
        self._delete_atom = ctypes.c_ulong(x.XInternAtom(dpy, b"WM_DELETE_WINDOW", 0))
        x.XSetWMProtocols(dpy, win, ctypes.byref(self._delete_atom), 1)
        if self.fullscreen and self.window_manager:  # EWMH: honoured when set before mapping
            state = ctypes.c_ulong(x.XInternAtom(dpy, b"_NET_WM_STATE_FULLSCREEN", 0))
            x.XChangeProperty(dpy, win, x.XInternAtom(dpy, b"_NET_WM_STATE", 0), XA_ATOM, 32, PROP_MODE_REPLACE,
                              ctypes.cast(ctypes.byref(state), ctypes.c_void_p), 1)
        self._hide_pointer()
        self._gc = x.XDefaultGC(dpy, scr)
        self._visual = x.XDefaultVisual(dpy, scr)
        self._depth = x.XDefaultDepth(dpy, scr)
        self._resize(self.size)
        x.XMapWindow(dpy, win)
        if self.fullscreen and not self.window_manager:
            x.XMoveWindow(dpy, win, 0, 0)
        x.XSync(dpy, 0)

    def _wm_running(self, root: int) -> bool:
        """An EWMH window manager names its check window in the root's ``_NET_SUPPORTING_WM_CHECK``."""
        x, dpy = self._x, self._dpy
        atom = x.XInternAtom(dpy, b"_NET_SUPPORTING_WM_CHECK", 1)
        if not atom:
            return False
        kind, fmt, data = ctypes.c_ulong(), ctypes.c_int(), ctypes.c_void_p()
        n, after = ctypes.c_ulong(), ctypes.c_ulong()
        status = x.XGetWindowProperty(dpy, root, atom, 0, 1, 0, 0, ctypes.byref(kind), ctypes.byref(fmt),
                                      ctypes.byref(n), ctypes.byref(after), ctypes.byref(data))
        if data.value:
            x.XFree(data)
        return status == 0 and n.value > 0

    def _hide_pointer(self) -> None:
        x, dpy = self._x, self._dpy
        blank = x.XCreatePixmap(dpy, self._win, 1, 1, 1)
        black = _XColor()
        cursor = x.XCreatePixmapCursor(dpy, blank, blank, ctypes.byref(black), ctypes.byref(black), 0, 0)
        x.XDefineCursor(dpy, self._win, cursor)

    def _resize(self, size: tuple[int, int]) -> None:
        """A black canvas (and its XImage) of the window's size; the frame's place in it."""
        self.size = (max(2, int(size[0])), max(2, int(size[1])))
        self.rect = letterbox(self.frame_wh, self.size)
        w, h = self.size
        self._canvas = np.zeros((h, w, 4), np.uint8)  # B, G, R, X: a 32-bit little-endian TrueColor pixel
        self._image = self._x.XCreateImage(self._dpy, self._visual, self._depth, ZPIXMAP, 0,
                                           self._canvas.ctypes.data, w, h, 32, w * 4)
        if not self._image or self._image.contents.bits_per_pixel != 32:
            raise XWindowError("the X server does not take 32-bit pixels for this visual")
        self.moved = True

    # -- drawing --------------------------------------------------------------------------------
    def show_i420(self, planes: np.ndarray) -> None:
        """One frame (I420 planes, as the frame step makes them), on screen when this returns."""
        x0, y0, w, h = self.rect
        bgra = cv2.cvtColor(planes, cv2.COLOR_YUV2BGRA_I420)
        region = self._canvas[y0:y0 + h, x0:x0 + w]
        if bgra.shape[:2] == (h, w):
            region[...] = bgra
        else:
            region[...] = cv2.resize(bgra, (w, h), interpolation=cv2.INTER_AREA if w < bgra.shape[1]
                                     else cv2.INTER_LINEAR)
        self._put(x0, y0, w, h)

    def _put(self, x0: int, y0: int, w: int, h: int) -> None:
        self._x.XPutImage(self._dpy, self._win, self._gc, self._image, x0, y0, x0, y0, w, h)
        self._x.XSync(self._dpy, 0)

    def poll(self) -> str | None:
        """Handle pending events; "quit" (Esc/q), "closed" (window closed) or None."""
        x, dpy, ev, ev_p = self._x, self._dpy, self._event, self._event_p
        result = None
        while x.XPending(dpy):
            x.XNextEvent(dpy, ev_p)
            kind = ctypes.c_int.from_buffer(ev).value
            if kind == KEY_PRESS:
                if x.XLookupKeysym(ev_p, 0) in QUIT_KEYSYMS:
                    result = "quit"
            elif kind == CLIENT_MESSAGE:
                if ctypes.c_ulong.from_buffer(ev, 56).value == self._delete_atom.value:  # data.l[0]
                    result = "closed"
            elif kind == CONFIGURE_NOTIFY:
                w, h = ctypes.c_int.from_buffer(ev, 56).value, ctypes.c_int.from_buffer(ev, 60).value
                if (w, h) != self.size:  # the window manager gave another size (full screen)
                    self._resize((w, h))
                    self._put(0, 0, *self.size)
                self.moved = True
            elif kind == EXPOSE:
                self._put(0, 0, *self.size)
        return result

    def origin(self) -> tuple[int, int]:
        """Screen position of the window's top-left pixel."""
        x, dpy = self._x, self._dpy
        rx, ry, child = ctypes.c_int(), ctypes.c_int(), ctypes.c_ulong()
        x.XTranslateCoordinates(dpy, self._win, x.XRootWindow(dpy, x.XDefaultScreen(dpy)), 0, 0,
                                ctypes.byref(rx), ctypes.byref(ry), ctypes.byref(child))
        return rx.value, ry.value

    def close(self) -> None:
        if self._dpy and not self._closed:
            self._closed = True
            self._x.XDestroyWindow(self._dpy, self._win)
            self._x.XSync(self._dpy, 0)
            # the XImage keeps pointing at the numpy canvas; it is never freed through Xlib
            self._x.XCloseDisplay(self._dpy)
            self._dpy = None
