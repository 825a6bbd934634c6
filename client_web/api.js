// lipstream API access: every request the page makes goes through apiFetch, which adds the server's
// bearer token when it has one.  The token comes from the URL fragment (`/#token=...`; the fragment
// never reaches the server's logs and is removed from the address bar at once) or, when the server
// answers 401, from a prompt.  It is kept in sessionStorage (this tab only).
"use strict";

const TOKEN_KEY = "lipstream.token";

function tokenFromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token");
  if (token === null) return null;
  params.delete("token");
  const rest = params.toString();
  history.replaceState(null, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
  return token;
}

const auth = {
  token: null,
  prompts: 0,  // how often the page asked (the headless test reads it)
  init() {
    const fromUrl = tokenFromFragment();
    if (fromUrl) this.set(fromUrl);
    else this.token = sessionStorage.getItem(TOKEN_KEY);
  },
  set(token) {
    this.token = token || null;
    if (this.token) sessionStorage.setItem(TOKEN_KEY, this.token);
    else sessionStorage.removeItem(TOKEN_KEY);
  },
  // Ask once for a token after a 401; true when there is a new one to retry with.
  ask(wrong) {
    this.prompts += 1;
    const answer = window.prompt(wrong ? "That token was refused. The server's token:" :
      "This lipstream server needs a token (serve --token / LIPSTREAM_TOKEN):", "");
    if (!answer || !answer.trim()) return false;
    this.set(answer.trim());
    return true;
  },
};
auth.init();

function withToken(init, token) {
  const headers = new Headers(init.headers || {});
  if (token) headers.set("Authorization", `Bearer ${token}`);
  return { ...init, headers };
}

// fetch() with the token; on 401 asks for one (at most twice) and retries.  keepalive requests
// (sent while the page closes) never prompt.
async function apiFetch(url, init = {}) {
  for (let attempt = 0; ; attempt += 1) {
    const used = auth.token;
    const resp = await fetch(url, withToken(init, used));
    if (resp.status !== 401 || init.keepalive || attempt >= 2) return resp;
    if (auth.token !== used) continue;  // another request got a new token meanwhile
    if (!auth.ask(Boolean(used))) return resp;
  }
}

// A WebSocket URL for an API path: browsers cannot set headers on a WebSocket, so the token rides
// in the `token` query parameter (the server accepts it there for WebSocket upgrades only).
function apiWebSocketUrl(path) {
  const url = new URL(path, location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  if (auth.token) url.searchParams.set("token", auth.token);
  return url.toString();
}

window.lipstreamApi = { auth, apiFetch, apiWebSocketUrl };
