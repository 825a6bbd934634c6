"""The kiosk's status: one dict for ``--status-file`` and ``GET /status``."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["kiosk_status", "write_status"]


def kiosk_status(kiosk) -> dict:  # noqa: ANN001 - realtime.kiosk.kiosk.Kiosk
    """What the status file and GET /status report."""
    s, sp, mic = kiosk.session, kiosk.speaker, kiosk.mic
    out = {
        "state": kiosk.state, "pid": os.getpid(), "mode": "presenter" if kiosk.config.presenter else "mic",
        "input": kiosk.mic_device.label() if kiosk.mic_device else None,
        "output": kiosk.out_device.label() if kiosk.out_device else None,
        "engine": getattr(kiosk.engine, "name", None), "avatar": getattr(kiosk.avatar, "name", None),
        "window": dict(kiosk.window), "show_lead_ms": round(1000 * kiosk._show_lead(), 2),
        "display": kiosk.pacer.summary() if kiosk.pacer else None,
        "speaking": kiosk.speaking(), "barge_ins": kiosk.barge_ins,
        "last_barge_in_at": kiosk.last_barge_in_at, "reconnects": kiosk.reconnects,
        "playlist": dict(kiosk.playlist), "exit_code": kiosk.exit_code, "message": kiosk.message,
    }
    if s is not None:
        out.update(frames_rendered=s.stats.frames_rendered, frames_skipped=s.stats.frames_skipped,
                   queued_s=round(s.source.queued_s, 3), mic_s=round(s.source.stats.mic_samples / 16000, 3),
                   openings=[round(v, 3) for v in list(s.stats.openings)[-25:]])
    if kiosk.loop is not None:
        out["ticks"] = kiosk.loop.ticks
    if sp is not None and kiosk.out_device is not None:
        out["speaker"] = {"rate": sp.rate, "underruns": sp.underruns, "backlog_ms": round(1000 * sp.backlog_s, 1),
                          "dropped": sp.samples_dropped,
                          "shed": sp.samples_shed, "callbacks": sp.callbacks, "status_flags": sp.status_flags}
    if mic is not None:
        out["mic"] = {"rate": mic.rate, "callbacks": mic.callbacks, "level_dbfs": round(mic.level_dbfs, 1),
                      "status_flags": mic.status_flags}
    return out

def write_status(kiosk) -> None:  # noqa: ANN001
    """Replace the status file (``--status-file``) atomically; never raises."""
    path = kiosk.config.status_file
    if path is None:
        return
    try:
        tmp = Path(f"{path}.tmp")
        tmp.write_text(json.dumps(kiosk_status(kiosk)))
        os.replace(tmp, path)
    except (OSError, TypeError, ValueError, RuntimeError) as exc:  # RuntimeError: a deque grew meanwhile
        log.debug("status file: %s", exc)
