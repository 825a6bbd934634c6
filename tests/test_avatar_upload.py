"""Avatar upload against the real server: the built-in portrait uploaded under a new name becomes
ready and streams in a session; bad files, names and sizes are refused with clear messages; a
decompression bomb fails in its worker process under the memory limit while the server and a live
session carry on; a preparation past its time limit is killed; delete and cancel; the page uploads."""

from __future__ import annotations

import asyncio
import shutil
import struct
import time
import zlib
from pathlib import Path

import pytest
import requests

from live_server import LiveServer
from server_harness import connect

from engines.avatar import default_avatars_dir
from export.avatar import DEFAULT_SOURCE

TOKEN = "upload-token-0123456789abcdef"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
PORTRAIT = DEFAULT_SOURCE.read_bytes()  # export/assets/astronaut.png


def png_bomb(path: Path, side: int = 16000) -> Path:
    """A valid PNG of side x side black RGB pixels: ~3 MB on disk, 768 MB decoded."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    comp, rows = zlib.compressobj(1), (b"\0" * (1 + 3 * side)) * 100
    idat = b"".join([comp.compress(rows) for _ in range(side // 100)] + [comp.flush()])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def srv(engine, avatar, tmp_path_factory):
    """A server with a token, its own avatars folder (holding a copy of the built-in avatar), a 4 MB
    upload limit, a 2 GB worker memory limit, and one live session."""
    avatars = tmp_path_factory.mktemp("avatars")
    shutil.copytree(Path(default_avatars_dir()) / avatar.name, avatars / avatar.name)
    with LiveServer(engine, token=TOKEN, avatars_dir=avatars, max_upload_bytes=4_000_000, upload_memory_mb=2048,
                    max_sessions=4) as server:
        server.avatars = avatars

        async def open_session():
            http = server.http(TOKEN)
            return http, await connect(server.base, http, keep_frames=False)

        server.http_session, server.live = server.run(open_session())
        yield server

        async def close() -> None:
            await server.live.close()
            await server.http_session.close()

        server.run(close())


def upload(srv: LiveServer, name: str | None, data: bytes | None, filename: str = "portrait.png",
           **extra: str) -> requests.Response:
    fields = {"name": name} if name is not None else {}
    fields.update(extra)
    parts = {key: (None, value) for key, value in fields.items()}  # always multipart, whatever is left out
    if data is not None:
        parts["file"] = (filename, data, "application/octet-stream")
    return requests.post(srv.base + "/api/avatars", headers=BEARER, files=parts, timeout=30)


def wait_status(srv: LiveServer, name: str, until: tuple[str, ...] = ("ready", "failed"),
                timeout_s: float = 90) -> tuple[dict, list[dict]]:
    seen: list[dict] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r = requests.get(f"{srv.base}/api/avatars/{name}/status", headers=BEARER, timeout=10)
        assert r.status_code == 200, r.text
        seen.append(r.json())
        if seen[-1]["status"] in until:
            return seen[-1], seen
        time.sleep(0.1)
    raise AssertionError(f"{name} still {seen[-1]} after {timeout_s} s")


def _error(r: requests.Response) -> str:
    assert r.headers["Content-Type"].startswith("application/json"), r.headers
    return r.json()["error"]


def test_upload_the_portrait_then_stream_it_then_delete_it(srv) -> None:
    r = upload(srv, "astro-2", PORTRAIT)
    assert r.status_code == 202, r.text
    assert r.headers["Location"] == "/api/avatars/astro-2/status" and r.json()["status"] == "queued"
    final, seen = wait_status(srv, "astro-2")
    assert final["status"] == "ready" and final["progress"] == 1.0, final
    assert {s["status"] for s in seen} <= {"queued", "preparing", "ready"}
    assert "astro-2" in requests.get(srv.base + "/api/avatars", headers=BEARER, timeout=10).json()["avatars"]
    assert (srv.avatars / "astro-2" / "manifest.json").is_file()

    async def session() -> tuple:
        client = await connect(srv.base, srv.http_session, avatar="astro-2", keep_frames=False)
        await asyncio.sleep(1.5)
        async with srv.http_session.get(f"{srv.base}/api/sessions/{client.session_id}") as resp:
            summary = await resp.json()
        async with srv.http_session.delete(f"{srv.base}/api/avatars/astro-2") as resp:
            in_use = (resp.status, await resp.json())
        await client.close()
        return len(client.video), summary, in_use

    frames, summary, in_use = srv.run(session())
    assert summary["avatar"] == "astro-2" and summary["frames_rendered"] > 10 and frames > 20, (frames, summary)
    assert in_use[0] == 409 and "session" in in_use[1]["error"]
    time.sleep(0.5)  # the peer's close reaches the server
    deleted = requests.delete(srv.base + "/api/avatars/astro-2", headers=BEARER, timeout=10)
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True, deleted.text
    assert not (srv.avatars / "astro-2").exists()
    assert requests.get(srv.base + "/api/avatars/astro-2/status", headers=BEARER, timeout=10).status_code == 404


def test_a_file_that_is_no_image_is_refused_clearly(srv) -> None:
    r = upload(srv, "notes", b"hello, I am a text file\n" * 20, filename="notes.png")
    assert r.status_code == 415 and "not an image or a video" in _error(r)
    r = upload(srv, "fake-png", b"\x89PNG\r\n\x1a\n" + b"garbage" * 100)  # the right magic, no image in it
    assert r.status_code == 202, r.text
    final, _ = wait_status(srv, "fake-png")
    assert final["status"] == "failed" and "cannot read the uploaded image" in final["error"], final
    assert "Traceback" not in final["error"] and str(srv.avatars) not in final["error"]
    assert not (srv.avatars / "fake-png").exists() and not list(srv.avatars.glob(".fake-png.*"))
    assert requests.delete(srv.base + "/api/avatars/fake-png", headers=BEARER, timeout=10).json()["was"] == "failed"


@pytest.mark.parametrize("name,status", [
    ("../x", 400), ("..", 400), (".hidden", 400), ("a/b", 400), ("x" * 65, 400), ("é", 400), ("", 400),
    ("default", 409),
])
def test_names_with_path_tricks_are_refused(srv, name: str, status: int) -> None:
    r = upload(srv, name, PORTRAIT)
    assert r.status_code == status, (name, r.status_code, r.text)
    assert _error(r)
    assert not any(p.name.startswith("x") or p.name == "b" for p in srv.avatars.parent.iterdir())
    assert not list((srv.avatars / ".uploads").glob("*"))  # the staged file is gone


def test_malformed_requests(srv) -> None:
    base = srv.base + "/api/avatars"
    r = requests.post(base, headers={**BEARER, "Content-Type": "image/png"}, data=PORTRAIT, timeout=10)
    assert r.status_code == 415 and "multipart/form-data" in _error(r)
    assert upload(srv, "nofile", None).status_code == 400
    assert upload(srv, None, PORTRAIT).status_code == 400
    assert upload(srv, "extra", PORTRAIT, other="x").status_code == 400
    big = upload(srv, "big", PORTRAIT * 10)  # 4.6 MB > the 4 MB limit of this server
    assert big.status_code == 413 and "limit" in _error(big)
    junk = requests.post(base, headers={**BEARER, "Content-Type": "multipart/form-data; boundary=zz"},
                         data=b"--zz\r\nnot a part\r\n", timeout=10)
    assert junk.status_code == 400, junk.text
    assert requests.post(base, files={"file": ("a.png", PORTRAIT)}, data={"name": "n"}, timeout=10).status_code == 401
    assert requests.get(base + "/../status", headers=BEARER, timeout=10).status_code in (400, 404)
    for bad in ("..%2Fx", "%2e%2e"):
        assert requests.get(f"{base}/{bad}/status", headers=BEARER, timeout=10).status_code in (400, 404)
    assert requests.delete(base + "/default", headers=BEARER, timeout=10).status_code == 409
    assert not list((srv.avatars / ".uploads").glob("*"))


def test_a_decompression_bomb_fails_in_its_worker_and_the_server_streams_on(srv, tmp_path) -> None:
    bomb = png_bomb(tmp_path / "bomb.png").read_bytes()
    frames0, t0 = len(srv.live.video), time.monotonic()
    r = upload(srv, "bomb", bomb)
    assert r.status_code == 202, r.text
    final, _ = wait_status(srv, "bomb")
    took = time.monotonic() - t0
    assert final["status"] == "failed" and "memory limit" in final["error"], final
    assert requests.get(srv.base + "/healthz", timeout=5).status_code == 200
    assert (len(srv.live.video) - frames0) / took > 15 and srv.live.pc.connectionState == "connected"


def test_a_preparation_past_its_time_limit_is_killed(srv) -> None:
    config = srv.state.config
    config.upload_timeout_s = 0.3  # less than the worker needs to start
    try:
        assert upload(srv, "slow", PORTRAIT).status_code == 202
        final, _ = wait_status(srv, "slow")
    finally:
        config.upload_timeout_s = 120.0
    assert final["status"] == "failed" and "longer than 0.3 s" in final["error"], final
    assert not (srv.avatars / "slow").exists()


def test_delete_cancels_a_queued_or_running_preparation(srv) -> None:
    assert upload(srv, "first", PORTRAIT).status_code == 202
    assert upload(srv, "second", PORTRAIT).status_code == 202
    assert upload(srv, "second", PORTRAIT).status_code == 409  # already being prepared
    wait_status(srv, "first", until=("preparing", "ready", "failed"))
    gone = [requests.delete(f"{srv.base}/api/avatars/{n}", headers=BEARER, timeout=10).json() for n in ("second", "first")]
    assert [g["deleted"] for g in gone] == [True, True] and gone[0]["was"] == "queued", gone
    time.sleep(1.0)
    assert not (srv.avatars / "first").exists() and not (srv.avatars / "second").exists()
    assert requests.get(srv.base + "/api/avatars/second/status", headers=BEARER, timeout=10).status_code == 404


def test_the_page_uploads(srv) -> None:
    playwright_api = pytest.importorskip("playwright.async_api", reason="needs the playwright package")
    from benchmarks.bench_glass import CHROMIUM, CHROMIUM_FLAGS

    if not CHROMIUM.is_file():
        pytest.skip("needs Debian chromium at /usr/bin/chromium")

    async def run() -> dict:
        async with playwright_api.async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
            try:
                page = await browser.new_page()
                await page.goto(f"{srv.base}/#token={TOKEN}")
                await page.fill("#upload-name", "from-page")
                await page.set_input_files("#upload-file", str(DEFAULT_SOURCE))
                await page.click("#upload")
                await page.wait_for_function("window.lipstream.upload && window.lipstream.upload.status === 'ready'",
                                             timeout=90_000, polling=200)
                return await page.evaluate("({upload: window.lipstream.upload, avatar: document.querySelector"
                                           "('#avatar').value, status: document.querySelector('#upload-status')"
                                           ".textContent})")
            finally:
                await browser.close()

    got = asyncio.run(run())
    assert got["avatar"] == "from-page" and "ready" in got["status"].lower(), got
    assert (srv.avatars / "from-page" / "manifest.json").is_file()


def test_cli_upload_limits() -> None:
    from realtime.cli import build_parser, serve_config

    cfg = serve_config(build_parser().parse_args(["serve", "--max-upload-mb", "5", "--max-upload-video-s", "4"]))
    assert cfg.max_upload_bytes == 5 * 1024 * 1024 and cfg.max_upload_video_s == 4.0


def _clip(seconds: float = 1.0) -> bytes:
    """The portrait as a short MP4 (384 px, 25 fps, sliding sideways)."""
    import io

    import av
    import cv2
    import numpy as np

    rgb = cv2.resize(cv2.cvtColor(cv2.imread(str(DEFAULT_SOURCE)), cv2.COLOR_BGR2RGB), (384, 384))
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 384, 384, "yuv420p"
        for i in range(int(seconds * 25)):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.roll(rgb, i, axis=1), format="rgb24")))
        container.mux(stream.encode())
    return buf.getvalue()


def test_a_video_upload_and_the_duration_limit(srv) -> None:
    clip = _clip(1.0)
    assert upload(srv, "clip", clip, filename="clip.mp4").status_code == 202
    final, _ = wait_status(srv, "clip")
    assert final["status"] == "ready" and final["kind"] == "video", final
    config = srv.state.config
    config.max_upload_video_s = 0.5
    try:
        assert upload(srv, "long-clip", clip, filename="clip.mp4").status_code == 202
        final, _ = wait_status(srv, "long-clip")
    finally:
        config.max_upload_video_s = 10.0
    assert final["status"] == "failed" and "1.0 s long; the limit is 0.5 s" in final["error"], final
