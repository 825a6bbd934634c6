"""Access control against the real server: the bearer token on every API route, /offer, WebSocket
and /metrics (open: /healthz, /openapi.json, the page's files), CORS closed unless one origin is
allowed, cross-origin state changes refused, and the warning for an exposed server without token."""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
import pytest
import requests

from live_server import LiveServer
from server_harness import connect

from realtime.auth import token_matches
from realtime.server import ServerConfig, create_app

TOKEN = "t0ken-for-the-tests-0123456789"
ORIGIN = "http://app.example.test"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def closed(engine):
    """A server that needs TOKEN and lets ORIGIN's pages call it, with one live session."""
    with LiveServer(engine, token=TOKEN, cors_origin=ORIGIN, max_sessions=2) as srv:
        async def open_session():
            http = srv.http(TOKEN)
            return http, await connect(srv.base, http, keep_frames=False)

        http, live = srv.run(open_session())
        srv.live = live
        yield srv

        async def close() -> None:
            await live.close()
            await http.close()

        srv.run(close())


@pytest.fixture(scope="module")
def open_server(engine):
    """A server with neither token nor CORS origin (the default)."""
    with LiveServer(engine) as srv:
        yield srv


def _json_error(r: requests.Response) -> str:
    assert r.headers["Content-Type"].startswith("application/json"), r.headers
    message = r.json()["error"]
    assert message and "Traceback" not in r.text
    return message


@pytest.mark.parametrize("method,path", [
    ("GET", "/metrics"), ("GET", "/api/avatars"), ("POST", "/offer"), ("GET", "/api/sessions/feedbeef"),
    ("DELETE", "/api/sessions/feedbeef"), ("POST", "/api/sessions/feedbeef/speak"),
    ("POST", "/api/sessions/feedbeef/interrupt"), ("GET", "/api/nothing-here"), ("POST", "/whip"),
    ("DELETE", "/whep/abc"), ("PUT", "/healthz"), ("POST", "/index.html"),
])
def test_routes_need_the_token(closed, method: str, path: str) -> None:
    r = requests.request(method, closed.base + path, timeout=10)
    assert r.status_code == 401, (method, path, r.status_code, r.text)
    assert "token" in _json_error(r)
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = requests.request(method, closed.base + path, headers={"Authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401 and _json_error(wrong) == "wrong token"
    assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
    basic = requests.request(method, closed.base + path, headers={"Authorization": f"Basic {TOKEN}"}, timeout=10)
    assert basic.status_code == 401
    in_query = requests.request(method, f"{closed.base}{path}?token={TOKEN}", timeout=10)
    assert in_query.status_code == 401  # the query parameter is for WebSocket upgrades only


def test_the_token_opens_them(closed) -> None:
    for path in ("/metrics", "/api/avatars", f"/api/sessions/{closed.live.session_id}"):
        r = requests.get(closed.base + path, headers=BEARER, timeout=10)
        assert r.status_code == 200, (path, r.text)
    assert requests.get(closed.base + "/api/sessions/feedbeef", headers=BEARER, timeout=10).status_code == 404
    deadline = time.monotonic() + 10
    while len(closed.live.video) <= 10 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(closed.live.video) > 10  # /offer with the token made a session that streams


@pytest.mark.parametrize("path", ["/healthz", "/", "/index.html", "/app.js", "/api.js", "/openapi.json"])
def test_health_page_and_description_stay_open(closed, path: str) -> None:
    r = requests.get(closed.base + path, timeout=10)
    assert r.status_code == 200, (path, r.status_code, r.text[:200])


def test_websocket_takes_the_token_as_header_or_query(closed) -> None:
    url = f"{closed.base}/api/sessions/{closed.live.session_id}/stream?rate=16000"

    async def attempt(http_headers: dict | None, query: str = "") -> object:
        async with aiohttp.ClientSession(headers=http_headers) as http:
            try:
                async with http.ws_connect(url + query) as ws:
                    first = await asyncio.wait_for(ws.receive_json(), 5)
                    await ws.close()
                    return first["type"]
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status

    assert closed.run(attempt(None)) == 401
    assert closed.run(attempt(None, "&token=nope")) == 401
    assert closed.run(attempt(None, f"&token={TOKEN}")) == "session"
    assert closed.run(attempt(BEARER)) == "session"


def test_cors_for_the_allowed_origin_only(closed) -> None:
    pre = requests.options(closed.base + "/offer", timeout=10, headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert pre.status_code == 204
    assert pre.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Authorization" in pre.headers["Access-Control-Allow-Headers"]
    assert "POST" in pre.headers["Access-Control-Allow-Methods"]
    got = requests.get(closed.base + "/api/avatars", headers={**BEARER, "Origin": ORIGIN}, timeout=10)
    assert got.status_code == 200 and got.headers["Access-Control-Allow-Origin"] == ORIGIN
    refused = requests.get(closed.base + "/api/avatars", headers={"Origin": ORIGIN}, timeout=10)
    assert refused.status_code == 401 and refused.headers["Access-Control-Allow-Origin"] == ORIGIN  # readable
    other = requests.get(closed.base + "/api/avatars", headers={**BEARER, "Origin": "http://evil.test"}, timeout=10)
    assert other.status_code == 200 and "Access-Control-Allow-Origin" not in other.headers
    post = requests.post(f"{closed.base}/api/sessions/{closed.live.session_id}/interrupt",
                         headers={**BEARER, "Origin": "http://evil.test"}, timeout=10)
    assert post.status_code == 403 and "cross-origin" in _json_error(post)


def test_cors_closed_by_default(open_server) -> None:
    base = open_server.base
    for headers in ({"Origin": "http://evil.test"}, {"Origin": "http://evil.test",
                                                    "Access-Control-Request-Method": "POST"}):
        for method in ("GET", "OPTIONS"):
            r = requests.request(method, base + "/api/avatars", headers=headers, timeout=10)
            assert "Access-Control-Allow-Origin" not in r.headers, (method, headers, r.headers)
    assert requests.get(base + "/api/avatars", timeout=10).status_code == 200  # no token configured: open
    # a page elsewhere cannot make this server act (a "simple" POST needs no preflight)
    r = requests.post(base + "/api/sessions/feedbeef/interrupt", headers={"Origin": "http://evil.test"}, timeout=10)
    assert r.status_code == 403 and "cross-origin" in _json_error(r)
    same = requests.post(base + "/api/sessions/feedbeef/interrupt", headers={"Origin": base}, timeout=10)
    assert same.status_code == 404  # the page's own origin is fine


def test_warns_when_exposed_without_token(caplog) -> None:
    def warnings(**config: object) -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="realtime.auth"):
            create_app(ServerConfig(**config), engine=object())  # nothing starts until the app runs
        return [r.getMessage() for r in caplog.records if r.name == "realtime.auth"]

    assert any("without a token" in m for m in warnings(host="0.0.0.0"))
    assert not warnings(host="0.0.0.0", token=TOKEN)
    assert not warnings(host="127.0.0.1")
    assert any("short" in m for m in warnings(host="127.0.0.1", token="abc"))


def test_token_compare() -> None:
    assert token_matches(TOKEN, TOKEN)
    assert not token_matches(TOKEN[:-1], TOKEN) and not token_matches(None, TOKEN)
    assert not token_matches("", TOKEN) and not token_matches("é" * 30, TOKEN)


def test_cli_token_from_option_or_environment(monkeypatch) -> None:
    from realtime.cli import build_parser, serve_config

    monkeypatch.setenv("LIPSTREAM_TOKEN", "from-env")
    assert serve_config(build_parser().parse_args(["serve"])).token == "from-env"
    assert serve_config(build_parser().parse_args(["serve", "--token", "opt"])).token == "opt"
    monkeypatch.setenv("LIPSTREAM_TOKEN", "")
    cfg = serve_config(build_parser().parse_args(["serve", "--cors-origin", ORIGIN]))
    assert cfg.token is None and cfg.cors_origin == ORIGIN


def test_page_sends_the_token_from_the_fragment_or_a_prompt(closed) -> None:
    playwright_api = pytest.importorskip("playwright.async_api", reason="needs the playwright package")
    from benchmarks.bench_glass import CHROMIUM, CHROMIUM_FLAGS

    if not CHROMIUM.is_file():
        pytest.skip("needs Debian chromium at /usr/bin/chromium")
    filled = "document.querySelectorAll('#avatars option').length > 0"

    async def run() -> dict:
        out = {}
        async with playwright_api.async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
            try:
                page = await browser.new_page()
                await page.goto(f"{closed.base}/#token={TOKEN}")
                await page.wait_for_function(filled, timeout=10_000)
                out["fragment"] = await page.evaluate("[location.hash, window.lipstreamApi.auth.prompts]")
                page = await (await browser.new_context()).new_page()
                answers = iter(["not-it", TOKEN])
                page.on("dialog", lambda d: asyncio.ensure_future(d.accept(next(answers))))
                await page.goto(f"{closed.base}/")
                await page.wait_for_function(filled, timeout=10_000)
                out["prompt"] = await page.evaluate("window.lipstreamApi.auth.prompts")
            finally:
                await browser.close()
        return out

    got = asyncio.run(run())
    assert got["fragment"] == ["", 0]  # the token left the address bar; nobody was asked
    assert got["prompt"] == 2  # a wrong answer is asked again
