"""``lipstream kiosk``: prepare and run a kiosk, report how it ended; ``--list-devices``."""

from __future__ import annotations

import os
import sys

from realtime.kiosk.config import KioskConfig, KioskError, config_from_args
from realtime.kiosk.devices import AudioDeviceError, format_devices, list_devices
from realtime.kiosk.kiosk import Kiosk

__all__ = ["run_kiosk", "list_devices_command", "config_from_args"]


def run_kiosk(config: KioskConfig) -> int:
    """``lipstream kiosk``: prepare, run, report; the exit code."""
    from realtime.kiosk.display import DisplayError

    kiosk = Kiosk(config)
    try:
        kiosk.prepare()
    except (AudioDeviceError, DisplayError, KioskError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return getattr(exc, "code", 2)
    code = kiosk.run()
    if kiosk.message:
        print(("error: " if code not in (0, 130) else "") + kiosk.message, file=sys.stderr)
    if kiosk._stuck:  # a PortAudio thread is stuck in a vanished device: do not wait for it at exit
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(code)
    return code


def list_devices_command() -> int:
    """``lipstream kiosk --list-devices``: 0 when PortAudio sees a device, 2 when none."""
    try:
        devices = list_devices()
    except AudioDeviceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("Audio devices (choose with --input/--output NAME or INDEX):")
    print(format_devices(devices))
    return 0 if devices else 2
