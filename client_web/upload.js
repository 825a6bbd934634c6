// lipstream avatar upload: a name and a portrait (PNG, JPEG, WebP) or a short video go to
// POST /api/avatars; the page then follows GET /api/avatars/{name}/status until the server's
// worker has prepared it (or says why it could not), and offers it as the next call's avatar.
// `window.lipstream.upload` holds the latest status (the headless test reads it).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const el = { name: $("upload-name"), file: $("upload-file"), button: $("upload"), status: $("upload-status"),
    avatar: $("avatar") };
  const POLL_MS = 500;
  const NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;

  function show(text, kind) {
    el.status.textContent = text;
    el.status.className = `upload-status ${kind}`;
  }

  function record(status) {
    window.lipstream.upload = status;
    return status;
  }

  async function errorText(resp) {
    try {
      const body = await resp.json();
      if (body && typeof body.error === "string") return body.error;
    } catch { /* not JSON */ }
    return `${resp.status} ${resp.statusText}`;
  }

  async function follow(name) {
    for (;;) {
      const resp = await apiFetch(`api/avatars/${encodeURIComponent(name)}/status`);
      if (!resp.ok) throw new Error(await errorText(resp));
      const status = record(await resp.json());
      if (status.status === "ready") return status;
      if (status.status === "failed") throw new Error(`${name}: ${status.error || "preparation failed"}`);
      show(status.status === "queued" ? `${name}: waiting for the server…` :
        `${name}: preparing… ${Math.round(100 * (status.progress || 0))} %`, "warn");
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  }

  async function uploadAvatar() {
    const name = el.name.value.trim();
    const file = el.file.files[0];
    if (!NAME.test(name)) {
      show("Name it with 1-64 letters, digits, - or _ (starting with a letter or digit).", "error");
      return;
    }
    if (!file) {
      show("Choose a portrait (PNG, JPEG, WebP) or a short video.", "error");
      return;
    }
    el.button.disabled = true;
    try {
      const form = new FormData();
      form.append("name", name);
      form.append("file", file);
      show(`Uploading ${file.name}…`, "warn");
      const resp = await apiFetch("api/avatars", { method: "POST", body: form });
      if (!resp.ok) throw new Error(await errorText(resp));
      record(await resp.json());
      await follow(name);
      if (typeof listAvatars === "function") await listAvatars();  // app.js: refresh the choices
      if (!el.avatar.disabled) el.avatar.value = name;
      show(`${name} is ready: press Start to use it.`, "ok");
    } catch (err) {
      record({ ...(window.lipstream.upload || {}), name, status: "failed", error: err.message });
      show(err.message, "error");
    } finally {
      el.button.disabled = false;
    }
  }

  el.button.addEventListener("click", uploadAvatar);
})();
