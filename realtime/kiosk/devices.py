"""Audio devices for the kiosk: PortAudio's list (through sounddevice), chosen by name or index.

``sounddevice`` is imported on first use: without Debian's ``libportaudio2`` its import raises
"PortAudio library not found", which becomes a :class:`AudioDeviceError` saying what to install.
A device is chosen by its index in the list, by its exact name, or by a case-insensitive part of
its name that only one device (with channels of the wanted kind) has; with no choice, PortAudio's
default device of that kind.  Every failure lists what was found and how to choose.

PortAudio reads the system's devices once, when it is initialised: :func:`rescan` re-initialises
it (all streams must be closed first) so a device that came back, or a new one, is seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["AudioDeviceError", "Device", "list_devices", "format_devices", "resolve", "rescan", "sounddevice"]

Kind = Literal["input", "output"]


class AudioDeviceError(RuntimeError):
    """No usable audio device: the message lists what was found and how to choose."""


@dataclass(frozen=True)
class Device:
    index: int
    name: str
    hostapi: str
    inputs: int  # max input channels
    outputs: int  # max output channels
    samplerate: float  # the device's default rate
    default_input: bool = False
    default_output: bool = False

    def channels(self, kind: Kind) -> int:
        return self.inputs if kind == "input" else self.outputs

    def label(self) -> str:
        return f"#{self.index} {self.name!r} ({self.hostapi})"


def sounddevice():  # noqa: ANN201 - the sounddevice module
    """``import sounddevice``, or AudioDeviceError saying how to get PortAudio."""
    try:
        import sounddevice as sd
    except OSError as exc:  # the wheel does not bundle PortAudio on Linux
        raise AudioDeviceError(
            f"PortAudio is not installed ({exc}): install it with `apt-get install libportaudio2` "
            "(Debian/Ubuntu) and try again") from None
    except ImportError as exc:
        raise AudioDeviceError(f"sounddevice is not installed ({exc}): pip install sounddevice") from None
    return sd


def list_devices() -> list[Device]:
    """Every device PortAudio sees, in its order (indices are what ``--input N`` takes)."""
    sd = sounddevice()
    try:
        raw = sd.query_devices()
        apis = [a["name"] for a in sd.query_hostapis()]
        default_in, default_out = _defaults(sd)
    except sd.PortAudioError as exc:
        raise AudioDeviceError(f"PortAudio could not list the audio devices: {exc}") from None
    return [Device(int(d["index"]), str(d["name"]), apis[d["hostapi"]] if d["hostapi"] < len(apis) else "?",
                   int(d["max_input_channels"]), int(d["max_output_channels"]), float(d["default_samplerate"]),
                   int(d["index"]) == default_in, int(d["index"]) == default_out)
            for d in raw]


def _defaults(sd) -> tuple[int, int]:  # noqa: ANN001
    dev = sd.default.device  # an input/output pair; -1 (or None) = not set
    pair = []
    for i in (0, 1):
        v = dev[i]
        pair.append(int(v) if isinstance(v, (int, np.integer)) else -1)
    out = []
    for value, kind in zip(pair, ("input", "output")):
        if value < 0:  # sounddevice's "not set": ask PortAudio for its default
            try:
                value = int(sd.query_devices(kind=kind)["index"])
            except (sd.PortAudioError, ValueError, KeyError, TypeError):
                value = -1
        out.append(value)
    return out[0], out[1]


def format_devices(devices: list[Device]) -> str:
    """The device list as the kiosk prints it (``--list-devices`` and every device error)."""
    if not devices:
        return "  (none: PortAudio found no audio devices; is a sound server running, e.g. PulseAudio or PipeWire?)"
    lines = []
    for d in devices:
        flags = (("default input", d.default_input), ("default output", d.default_output))
        marks = " ".join(m for m, on in flags if on)
        lines.append(f"  {d.index:3d}  {d.name!r:40s} {d.inputs:3d} in {d.outputs:3d} out  "
                     f"{d.samplerate:7.0f} Hz  {d.hostapi}{'  [' + marks + ']' if marks else ''}")
    return "\n".join(lines)


HOW_TO_CHOOSE = ("choose one with --input/--output NAME (a unique part of its name) or INDEX; "
                 "`lipstream kiosk --list-devices` lists them")


def resolve(spec: str | int | None, kind: Kind, devices: list[Device] | None = None) -> Device:
    """The device ``spec`` names (index, exact name, or unique part of a name) that has ``kind``
    channels; ``None`` picks the default one.  AudioDeviceError otherwise, listing the devices."""
    devices = list_devices() if devices is None else devices
    usable = [d for d in devices if d.channels(kind) > 0]
    flag = "--input" if kind == "input" else "--output"

    def fail(why: str) -> AudioDeviceError:
        return AudioDeviceError(f"{why}\nAudio devices found:\n{format_devices(devices)}\n{HOW_TO_CHOOSE}")

    if not usable:
        what = "microphone (audio input device)" if kind == "input" else "speaker (audio output device)"
        way = "with --play or --http" if kind == "input" else "silent"
        raise fail(f"no {what} found; {flag} none runs without one ({way})")
    if spec is None or (isinstance(spec, str) and spec.strip() == ""):
        for d in usable:
            if (d.default_input if kind == "input" else d.default_output):
                return d
        return usable[0]
    text = str(spec).strip()
    if isinstance(spec, int) or text.lstrip("-").isdigit():
        index = int(text)
        for d in devices:
            if d.index == index:
                if d.channels(kind) == 0:
                    raise fail(f"{flag} {index}: device {d.label()} has no {kind} channels")
                return d
        raise fail(f"{flag} {index}: there is no device with index {index}")
    exact = [d for d in usable if d.name == text]
    if len(exact) == 1:
        return exact[0]
    part = [d for d in usable if text.lower() in d.name.lower()]
    if len(part) == 1:
        return part[0]
    if not part:
        raise fail(f"{flag} {text!r}: no {kind} device has that in its name")
    raise fail(f"{flag} {text!r} matches {len(part)} {kind} devices ({', '.join(d.label() for d in part)}); "
               "use its index or more of its name")


def rescan() -> None:
    """Re-initialise PortAudio so it sees devices as they are now (close every stream first)."""
    sd = sounddevice()
    try:
        sd._terminate()
    except Exception:  # noqa: BLE001 - already terminated, or the old server is gone
        pass
    sd._initialize()
