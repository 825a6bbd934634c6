"""Avatars uploaded over HTTP, prepared in a worker process under limits.

- ``POST /api/avatars`` (``multipart/form-data``: a ``name`` field and a ``file`` field holding a
  portrait image — PNG, JPEG, WebP — or a short video — MP4/MOV, WebM/MKV, AVI) -> ``202``
  ``{name, status: "queued", ...}`` with ``Location: /api/avatars/{name}/status``.  The body is
  streamed to a staging file, never held in memory; the type is sniffed from the file's first
  bytes (the client's Content-Type and file name are ignored; the name is never a path).
  Errors: 400 (malformed form, missing or unexpected field, a name that is not 1-64 letters,
  digits, ``-`` or ``_`` starting with a letter or digit — so no ``..``, ``/`` or dot-files), 409
  (the name exists, is being prepared, or is the server's default), 413 (over
  ``max_upload_bytes``), 415 (not multipart, or the file is no image or video), 503 (the queue is
  full; ``Retry-After``).
- ``GET /api/avatars/{name}/status`` -> ``{name, status: queued|preparing|ready|failed, progress,
  error?, elapsed_s}``; avatars prepared before (``lipstream prepare``) are ``ready``; 404 unknown.
- ``DELETE /api/avatars/{name}`` cancels a queued or running preparation, or deletes an uploaded
  avatar (only those: a ``.uploaded`` mark in its directory); 409 while a session shows it, for the
  default avatar, or for one prepared on the server itself.

One preparation runs at a time (``python -m realtime.avatar_worker`` as a subprocess: its memory,
CPU-time and output-size rlimits, nice 10, one BLAS/OpenMP thread) and is killed past
``upload_timeout_s``; whatever it does, the server only reads its JSON lines.  The finished avatar
appears atomically (``engines.avatar.write_avatar``); a killed one leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import re
import shutil
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from engines.avatar import default_avatars_dir
from realtime.api_errors import ApiError, fail

log = logging.getLogger(__name__)

__all__ = ["add_routes", "Uploads", "UPLOAD_NAME", "sniff", "UPLOADED_MARK"]

UPLOAD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
UPLOADED_MARK = ".uploaded"  # in an avatar's directory: it came through the API, the API may delete it
K_UPLOADS = web.AppKey("lipstream_uploads", object)
_REPO = Path(__file__).resolve().parent.parent  # the worker imports realtime/, engines/, export/ from here
_CHUNK = 64 * 1024
_KEEP_FINISHED = 100  # finished jobs remembered for their status


def sniff(head: bytes) -> str | None:
    """"image", "video" or None from a file's first bytes."""
    if head.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return "image"
    if head[4:8] == b"ftyp" or head.startswith(b"\x1a\x45\xdf\xa3") or (head[:4] == b"RIFF" and head[8:12] == b"AVI "):
        return "video"
    return None


@dataclass
class Job:
    name: str
    kind: str
    source: Path
    status: str = "queued"  # queued | preparing | ready | failed | cancelled
    progress: float = 0.0
    error: str | None = None
    created: float = field(default_factory=time.monotonic)
    finished: float | None = None
    proc: asyncio.subprocess.Process | None = None

    def describe(self) -> dict:
        out = {"name": self.name, "status": self.status, "kind": self.kind, "progress": round(self.progress, 3),
               "elapsed_s": round((self.finished or time.monotonic()) - self.created, 2)}
        if self.error is not None:
            out["error"] = self.error
        return out

    @property
    def pending(self) -> bool:
        return self.status in ("queued", "preparing")


class Uploads:
    def __init__(self, state: Any) -> None:  # realtime.server.ServerState
        self.state = state
        self.jobs: dict[str, Job] = {}
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._runner: asyncio.Task | None = None

    @property
    def config(self):  # noqa: ANN201 - ServerConfig
        return self.state.config

    @property
    def avatars_dir(self) -> Path:
        return Path(self.config.avatars_dir or default_avatars_dir())

    def check_name(self, name: str, *, for_upload: bool = False) -> str:
        if not UPLOAD_NAME.match(name):
            raise fail(400, f"invalid avatar name {name[:80]!r}: 1-64 letters, digits, '-' or '_', starting with "
                            "a letter or digit")
        if for_upload and (name == self.config.avatar or name == "default" or name.startswith("default-")):
            raise fail(409, f"{name!r} is the server's built-in avatar name; choose another")
        return name

    # -- POST /api/avatars --------------------------------------------------------------------
    async def receive(self, request: web.Request) -> web.Response:
        limit = self.config.max_upload_bytes
        if request.content_type != "multipart/form-data":
            raise fail(415, "send the avatar as multipart/form-data with a 'name' and a 'file' field "
                            f"(got {request.content_type or 'no content type'})")
        if request.content_length is not None and request.content_length > limit + _CHUNK:
            raise fail(413, f"upload too large ({request.content_length} bytes; the limit is {limit})")
        name, source, kind = await self._read_form(request)
        try:
            self.check_name(name, for_upload=True)
            self._check_free(name)
        except ApiError:
            source.unlink(missing_ok=True)
            raise
        job = self.jobs[name] = Job(name, kind, source)
        self._forget_old()
        self._queue.put_nowait(job)
        if self._runner is None or self._runner.done():
            self._runner = asyncio.ensure_future(self._run())
        log.info("avatar %r uploaded (%s, %d bytes); queued", name, kind, source.stat().st_size)
        status_url = f"/api/avatars/{name}/status"
        return web.json_response({**job.describe(), "status_url": status_url}, status=202,
                                 headers={"Location": status_url})

    def _check_free(self, name: str) -> None:
        job = self.jobs.get(name)
        if job is not None and job.pending:
            raise fail(409, f"avatar {name!r} is already being prepared")
        if (self.avatars_dir / name).exists():
            raise fail(409, f"an avatar {name!r} exists; DELETE /api/avatars/{name} first, or choose another name")
        if sum(j.pending for j in self.jobs.values()) >= self.config.max_upload_queue:
            raise fail(503, f"{self.config.max_upload_queue} avatars are waiting to be prepared; retry later",
                       **{"Retry-After": "10"})

    async def _read_form(self, request: web.Request) -> tuple[str, Path, str]:
        name: str | None = None
        staged: tuple[Path, str] | None = None
        try:
            reader = await request.multipart()
            for _ in range(4):
                part = await reader.next()
                if part is None:
                    break
                if not isinstance(part, BodyPartReader):
                    raise fail(400, "nested multipart bodies are not accepted")
                if part.name == "name" and name is None:
                    name = (await _read_small(part, 256)).strip()
                elif part.name == "file" and staged is None:
                    staged = await self._stage(part)
                else:
                    raise fail(400, f"unexpected field {str(part.name)[:40]!r}: send one 'name' and one 'file'")
            else:
                raise fail(400, "too many fields: send one 'name' and one 'file'")
        except ApiError:
            _unlink(staged)
            raise
        except (ValueError, LookupError, AssertionError, HttpProcessingError) as exc:  # aiohttp's multipart parser
            _unlink(staged)
            raise fail(400, f"malformed multipart body ({exc.__class__.__name__})") from None
        if staged is None or not name:
            _unlink(staged)
            raise fail(400, "send a 'name' field and the portrait or video as the 'file' field")
        return name, *staged

    async def _stage(self, part: BodyPartReader) -> tuple[Path, str]:
        limit = self.config.max_upload_bytes
        staging = self.avatars_dir / ".uploads"
        staging.mkdir(parents=True, exist_ok=True)
        path = staging / uuid.uuid4().hex
        size, head = 0, b""
        try:
            with open(path, "wb") as out:
                while chunk := await part.read_chunk(_CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise fail(413, f"the file is over the {limit} byte upload limit")
                    if len(head) < 16:
                        head += chunk[:16]
                    out.write(chunk)
            kind = sniff(head)
            if kind is None:
                raise fail(415, "the file is not an image or a video this server prepares: send a PNG, JPEG or "
                                "WebP portrait, or an MP4/MOV, WebM/MKV or AVI video")
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path, kind

    def _forget_old(self) -> None:
        finished = [n for n, j in self.jobs.items() if not j.pending]
        for name in finished[:max(0, len(finished) - _KEEP_FINISHED)]:
            del self.jobs[name]

    # -- the worker process -------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            job = await self._queue.get()
            if job.status == "queued":
                await self._prepare(job)

    def _command(self, job: Job) -> list[str]:
        cfg, model_dir = self.config, getattr(self.state.engine, "model_dir", None)
        cmd = [sys.executable, "-m", "realtime.avatar_worker", "--source", str(job.source), "--kind", job.kind,
               "--name", job.name, "--avatars-dir", str(self.avatars_dir), "--max-seconds", str(cfg.max_upload_video_s),
               "--memory-mb", str(cfg.upload_memory_mb), "--cpu-s", str(max(1, int(cfg.upload_timeout_s)))]
        return cmd + (["--model", str(model_dir)] if model_dir is not None else [])

    async def _prepare(self, job: Job) -> None:
        job.status = "preparing"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(_REPO), os.environ.get("PYTHONPATH")])),
               "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        stderr: collections.deque[str] = collections.deque(maxlen=20)
        try:
            job.proc = await asyncio.create_subprocess_exec(
                *self._command(job), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=env, start_new_session=True)
            try:
                ready = await asyncio.wait_for(self._follow(job, stderr), self.config.upload_timeout_s)
            except asyncio.TimeoutError:
                job.proc.kill()
                await job.proc.wait()
                ready, job.error = False, f"preparing it took longer than {self.config.upload_timeout_s:g} s"
            self._finish(job, ready, job.proc.returncode, stderr)
        except asyncio.CancelledError:
            if job.proc is not None and job.proc.returncode is None:
                job.proc.kill()
            raise
        except Exception as exc:  # starting the worker failed: the job fails, the server does not
            log.exception("avatar %r: the preparation worker could not run", job.name)
            job.status, job.error = "failed", f"the preparation worker could not run ({exc.__class__.__name__})"
        finally:
            if job.proc is not None and job.proc.returncode is None:  # whatever went wrong, it does not outlive us
                job.proc.kill()
            job.proc, job.finished = None, time.monotonic()
            job.source.unlink(missing_ok=True)
            if job.status != "ready":
                self._remove_partial(job.name)

    async def _follow(self, job: Job, stderr: collections.deque) -> bool:
        """Read the worker's JSON lines (and keep the tail of its stderr) until it exits."""
        ready = False

        async def drain_stderr() -> None:
            while line := await job.proc.stderr.readline():
                stderr.append(line.decode("utf-8", "replace").rstrip())

        async def read_stdout() -> None:
            nonlocal ready
            while line := await job.proc.stdout.readline():
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                if isinstance(message, dict):
                    job.progress = float(message.get("progress", job.progress) or 0.0)
                    job.error = str(message["error"])[:500] if "error" in message else job.error
                    ready = ready or message.get("ready") is True

        await asyncio.gather(drain_stderr(), read_stdout())
        await job.proc.wait()
        return ready

    def _finish(self, job: Job, ready: bool, returncode: int | None, stderr: collections.deque) -> None:
        if job.status == "cancelled":  # deleted while it ran: it may have finished writing just before the kill
            shutil.rmtree(self.avatars_dir / job.name, ignore_errors=True)
            return
        if ready and returncode == 0:
            (self.avatars_dir / job.name / UPLOADED_MARK).write_text(json.dumps({"uploaded": time.time()}) + "\n")
            job.status, job.progress = "ready", 1.0
            log.info("avatar %r prepared (%.1f s)", job.name, time.monotonic() - job.created)
            return
        if job.error is None:
            job.error = _why(returncode, self.config)
        job.status = "failed"
        log.warning("avatar %r failed: %s (worker exit %s)%s", job.name, job.error, returncode,
                    "".join(f"\n  {line}" for line in stderr))

    def _remove_partial(self, name: str) -> None:
        for tmp in self.avatars_dir.glob(f".{name}.*"):  # a killed write_avatar's temporary directory
            shutil.rmtree(tmp, ignore_errors=True)

    # -- status and delete ---------------------------------------------------------------------
    def status(self, request: web.Request) -> web.Response:
        name = self.check_name(request.match_info["name"])
        job = self.jobs.get(name)
        if job is not None and job.status != "cancelled":
            return web.json_response(job.describe())
        if name in (self.config.avatar, "default") or (self.avatars_dir / name / "manifest.json").is_file():
            return web.json_response({"name": name, "status": "ready", "progress": 1.0})
        raise fail(404, f"no avatar {name!r} (never uploaded, or deleted)")

    async def delete(self, request: web.Request) -> web.Response:
        name = self.check_name(request.match_info["name"])
        if name in (self.config.avatar, "default"):
            raise fail(409, f"{name!r} is the server's default avatar; it cannot be deleted")
        job = self.jobs.get(name)
        if job is not None and job.pending:
            was, job.status = job.status, "cancelled"
            if job.proc is not None and job.proc.returncode is None:
                job.proc.send_signal(signal.SIGKILL)
            del self.jobs[name]
            return web.json_response({"name": name, "deleted": True, "was": was})
        path = self.avatars_dir / name
        if not path.is_dir():
            if self.jobs.pop(name, None) is not None:  # a failed upload: forget it
                return web.json_response({"name": name, "deleted": True, "was": "failed"})
            raise fail(404, f"no avatar {name!r}")
        if path.is_symlink() or not (path / UPLOADED_MARK).is_file():
            raise fail(409, f"avatar {name!r} was not uploaded through the API; remove it on the server")
        users = sum(s.avatar_name == name for s in self.state.sessions.values())
        try:
            if users:
                raise RuntimeError
            self.state.avatars.unload(name)
        except RuntimeError:
            raise fail(409, f"avatar {name!r} is shown by {users or 'a'} live session(s); end them first") from None
        await asyncio.get_running_loop().run_in_executor(None, shutil.rmtree, path)
        self.jobs.pop(name, None)
        log.info("avatar %r deleted", name)
        return web.json_response({"name": name, "deleted": True, "was": "ready"})

    async def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        for job in self.jobs.values():
            if job.pending:
                job.source.unlink(missing_ok=True)


def _why(returncode: int | None, config: Any) -> str:
    if returncode is not None and returncode < 0:
        sig = -returncode
        if sig in (signal.SIGXCPU, signal.SIGKILL):
            return f"preparing it used more than its CPU-time limit ({config.upload_timeout_s:g} s) and was stopped"
        return (f"the preparation crashed (signal {signal.Signals(sig).name}): the file may be malformed, or need "
                f"more than the {config.upload_memory_mb} MB memory limit")
    return f"the preparation failed (exit status {returncode})"


async def _read_small(part: BodyPartReader, limit: int) -> str:
    data = b""
    while chunk := await part.read_chunk(limit + 1):
        data += chunk
        if len(data) > limit:
            raise fail(400, f"the '{part.name}' field is longer than {limit} bytes")
    return data.decode("utf-8")


def _unlink(staged: tuple[Path, str] | None) -> None:
    if staged is not None:
        staged[0].unlink(missing_ok=True)


def add_routes(app: web.Application, state: Any) -> None:
    """The upload routes on ``app``; ``state`` is the server's ServerState."""
    uploads = app[K_UPLOADS] = Uploads(state)

    async def on_shutdown(_: web.Application) -> None:
        await uploads.close()

    app.on_shutdown.append(on_shutdown)
    app.router.add_post("/api/avatars", uploads.receive)
    app.router.add_get("/api/avatars/{name}/status", uploads.status)
    app.router.add_delete("/api/avatars/{name}", uploads.delete)
