// lipstream browser client: one WebRTC call to the server, no build step, standard APIs only.
//
// The server does not take trickled ICE candidates, so the offer is sent once gathering has
// completed.  No ICE servers: the server is on loopback or the LAN.  `window.lipstream` exposes
// the call's state and the latest stats for debugging and for the headless-browser test.
"use strict";

const $ = (id) => document.getElementById(id);
const ui = {
  status: $("status"), mic: $("mic"), avatar: $("avatar"), avatars: $("avatars"), sound: $("sound"),
  start: $("start"), stop: $("stop"), video: $("video"),
  presenter: $("presenter"), speechFile: $("speech-file"), speak: $("speak"), interrupt: $("interrupt"),
  fps: $("st-fps"), rtt: $("st-rtt"), jbVideo: $("st-jb-video"), jbAudio: $("st-jb-audio"),
  server: $("st-server"), audioIn: $("st-audio"),
};

const ICE_GATHER_TIMEOUT_MS = 5000;
const STATS_PERIOD_MS = 1000;
const VOICE_CONSTRAINTS = { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 };

// One call at a time; `call` is null when idle.
let call = null;
const state = window.lipstream = { phase: "idle", sessionId: null, error: null, stats: null, history: [] };

function setStatus(text, kind = "idle") {
  ui.status.textContent = text;
  ui.status.className = `status ${kind}`;
}

function fail(message) {
  state.error = message;
  setStatus(message, "error");
}

// ---------------------------------------------------------------- devices and avatars

async function listMicrophones() {
  if (!navigator.mediaDevices?.enumerateDevices) return;
  const devices = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "audioinput");
  const chosen = ui.mic.value;  // read after the await: the user may have chosen meanwhile
  ui.mic.replaceChildren(new Option("Default microphone", "default"));
  devices.forEach((d, i) => {
    // Before permission is granted browsers hide ids and labels; the default entry covers that case.
    if (d.deviceId && d.deviceId !== "default") ui.mic.add(new Option(d.label || `Microphone ${i + 1}`, d.deviceId));
  });
  ui.mic.add(new Option("None (presenter mode)", "none"));
  if ([...ui.mic.options].some((o) => o.value === chosen)) ui.mic.value = chosen;
}

async function listAvatars() {
  try {
    const resp = await apiFetch("api/avatars");
    if (!resp.ok) return;
    const data = await resp.json();
    ui.avatars.replaceChildren(...data.avatars.map((name) => new Option(name, name)));
    if (!ui.avatar.value) ui.avatar.value = data.default;
  } catch (err) {
    console.warn("no avatar list", err);  // a text box still works
  }
}

function micErrorText(err) {
  switch (err.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "Microphone permission denied. Allow it in the browser, or choose \"None (presenter mode)\".";
    case "NotFoundError":
    case "OverconstrainedError":
      return "No such microphone. Choose another one, or \"None (presenter mode)\".";
    case "NotReadableError":
      return "The microphone is in use by another application or cannot be opened.";
    default:
      return `Cannot open the microphone: ${err.message || err.name}`;
  }
}

async function openMicrophone() {
  if (ui.mic.value === "none") return null;
  if (!navigator.mediaDevices?.getUserMedia) {
    throw new Error("This page cannot use a microphone here (it needs https:// or http://localhost).");
  }
  const audio = { ...VOICE_CONSTRAINTS };
  if (ui.mic.value !== "default") audio.deviceId = { exact: ui.mic.value };
  setStatus("Asking for the microphone…", "warn");
  try {
    return await navigator.mediaDevices.getUserMedia({ audio, video: false });
  } catch (err) {
    console.warn("getUserMedia failed:", err.name, err.message);
    throw new Error(micErrorText(err));
  }
}

// ---------------------------------------------------------------- the call

function waitForIceGathering(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState !== "complete") return;
      pc.removeEventListener("icegatheringstatechange", done);
      clearTimeout(timer);
      resolve();
    };
    // Gathering host candidates takes milliseconds; send what we have if a network stalls it.
    const timer = setTimeout(() => { pc.removeEventListener("icegatheringstatechange", done); resolve(); },
      ICE_GATHER_TIMEOUT_MS);
    pc.addEventListener("icegatheringstatechange", done);
  });
}

async function errorFromResponse(resp) {
  let message = `${resp.status} ${resp.statusText}`;
  try {
    const body = await resp.json();
    if (body && typeof body.error === "string") message = body.error;
  } catch { /* not JSON: keep the status line */ }
  const err = new Error(message);
  err.status = resp.status;
  err.retryAfter = Number(resp.headers.get("Retry-After")) || 0;
  return err;
}

async function postOffer(pc, avatar) {
  const body = { sdp: pc.localDescription.sdp, type: pc.localDescription.type };
  if (avatar) body.avatar = avatar;
  const resp = await apiFetch("offer", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  if (!resp.ok) throw await errorFromResponse(resp);
  return resp.json();
}

function describeConnection(pcState) {
  return {
    new: ["Connecting…", "warn"],
    connecting: ["Connecting…", "warn"],
    connected: [call?.mic ? "Connected: speak, the avatar follows your voice." :
      "Connected (presenter mode): the avatar speaks the files you send.", "ok"],
    disconnected: ["Connection interrupted; waiting for the network to come back…", "warn"],
    failed: ["Connection failed: no network path to the server's media (firewall or VPN?).", "error"],
    closed: ["Disconnected.", "idle"],
  }[pcState] || [pcState, "warn"];
}

async function start() {
  if (call) return;
  state.error = null;
  setButtons(true);
  const thisCall = call = { pc: null, mic: null, sessionId: null, timer: null, retry: null, stopped: false };
  try {
    thisCall.mic = await openMicrophone();
    if (thisCall.stopped) return;
    if (thisCall.mic) listMicrophones();  // labels become visible once permission is granted
    await connect(thisCall);
  } catch (err) {
    if (thisCall.stopped) return;
    if (err.status === 503) {
      scheduleRetry(thisCall, err.retryAfter || 5);
      return;
    }
    await teardown(thisCall);
    fail(err.message || String(err));
  }
}

async function connect(thisCall) {
  const pc = thisCall.pc = new RTCPeerConnection({ iceServers: [], bundlePolicy: "max-bundle" });
  const remote = new MediaStream();
  pc.addEventListener("track", (ev) => {
    remote.addTrack(ev.track);
    if (ui.video.srcObject !== remote) ui.video.srcObject = remote;
    playVideo();
  });
  pc.addEventListener("connectionstatechange", () => {
    if (thisCall.stopped) return;
    state.phase = pc.connectionState;
    const [text, kind] = describeConnection(pc.connectionState);
    if (pc.connectionState === "failed") {
      teardown(thisCall).then(() => fail(text));  // the server drops a failed peer too
    } else {
      setStatus(text, kind);
    }
  });

  if (thisCall.mic) {
    const [track] = thisCall.mic.getAudioTracks();
    pc.addTransceiver(track, { direction: "sendrecv", streams: [thisCall.mic] });
  } else {
    pc.addTransceiver("audio", { direction: "recvonly" });
  }
  pc.addTransceiver("video", { direction: "recvonly" });

  setStatus("Preparing the connection…", "warn");
  await pc.setLocalDescription(await pc.createOffer());
  await waitForIceGathering(pc);
  if (thisCall.stopped) return;
  setStatus("Asking the server for a session…", "warn");
  const answer = await postOffer(pc, ui.avatar.value.trim());
  if (thisCall.stopped) {
    deleteSession(answer.session_id);
    return;
  }
  thisCall.sessionId = state.sessionId = answer.session_id;
  await pc.setRemoteDescription({ type: answer.type, sdp: answer.sdp });
  ui.presenter.hidden = Boolean(thisCall.mic);
  updatePresenterButtons();
  thisCall.timer = setInterval(() => updateStats(thisCall), STATS_PERIOD_MS);
}

function scheduleRetry(thisCall, seconds) {
  let left = Math.max(1, Math.round(seconds));
  const tick = () => {
    if (thisCall.stopped) return;
    if (left <= 0) {
      closePeer(thisCall);
      connect(thisCall).catch(async (err) => {
        if (thisCall.stopped) return;
        if (err.status === 503) { scheduleRetry(thisCall, err.retryAfter || 5); return; }
        await teardown(thisCall);
        fail(err.message || String(err));
      });
      return;
    }
    setStatus(`The server is full; retrying in ${left} s…`, "warn");
    left -= 1;
    thisCall.retry = setTimeout(tick, 1000);
  };
  tick();
}

function playVideo() {
  ui.video.muted = !ui.sound.checked;
  ui.video.play().catch(() => {
    // Autoplay with sound refused (no user gesture): play muted and say how to get sound.
    ui.video.muted = true;
    ui.video.play().catch(() => {});
    setStatus("Playing without sound: click the video to hear the avatar.", "warn");
  });
}

function closePeer(thisCall) {
  clearInterval(thisCall.timer);
  thisCall.timer = null;
  if (thisCall.pc) thisCall.pc.close();
  thisCall.pc = null;
}

function deleteSession(sessionId) {
  // keepalive lets this finish while the page is being closed.
  if (sessionId) apiFetch(`api/sessions/${sessionId}`, { method: "DELETE", keepalive: true }).catch(() => {});
}

async function teardown(thisCall) {
  thisCall.stopped = true;
  clearTimeout(thisCall.retry);
  closePeer(thisCall);
  deleteSession(thisCall.sessionId);
  thisCall.mic?.getTracks().forEach((t) => t.stop());
  if (call === thisCall) call = null;
  ui.video.srcObject = null;
  ui.presenter.hidden = true;
  state.phase = "idle";
  state.sessionId = null;
  setButtons(false);
  updatePresenterButtons();
}

async function stop() {
  if (!call) return;
  await teardown(call);
  setStatus("Stopped.", "idle");
}

function setButtons(running) {
  ui.start.disabled = running;
  ui.stop.disabled = !running;
  ui.mic.disabled = running;
  ui.avatar.disabled = running;
}

// ---------------------------------------------------------------- presenter mode

function updatePresenterButtons() {
  const live = Boolean(call?.sessionId) && !call.mic;
  ui.speak.disabled = !(live && ui.speechFile.files.length);
  ui.interrupt.disabled = !live;
}

async function presenterRequest(path, init) {
  if (!call?.sessionId) return;
  const resp = await apiFetch(`api/sessions/${call.sessionId}/${path}`, { method: "POST", ...init });
  if (!resp.ok) throw await errorFromResponse(resp);
  return resp.json();
}

async function speakFile() {
  const file = ui.speechFile.files[0];
  if (!file) return;
  try {
    const r = await presenterRequest("speak", { headers: { "Content-Type": file.type || "application/octet-stream" }, body: file });
    setStatus(`Speaking ${file.name} (${r.duration_s.toFixed(1)} s; ${r.queued_s.toFixed(1)} s queued).`, "ok");
  } catch (err) {
    fail(err.message);
  }
}

async function interruptSpeech() {
  try {
    await presenterRequest("interrupt");
    setStatus("Interrupted.", "ok");
  } catch (err) {
    fail(err.message);
  }
}

// ---------------------------------------------------------------- live stats

const fmtMs = (s) => (Number.isFinite(s) ? `${(s * 1000).toFixed(0)} ms` : "–");

function selectedPair(report) {
  let transport = null;
  const pairs = [];
  report.forEach((s) => {
    if (s.type === "transport" && s.selectedCandidatePairId) transport = s;
    if (s.type === "candidate-pair") pairs.push(s);
  });
  if (transport) return report.get(transport.selectedCandidatePairId);
  // Firefox has no transport stats: it marks the pair in use as `selected`.
  return pairs.find((p) => p.selected) || pairs.find((p) => p.nominated && p.state === "succeeded");
}

function inbound(report, kind) {
  let found = null;
  report.forEach((s) => { if (s.type === "inbound-rtp" && (s.kind || s.mediaType) === kind) found = s; });
  return found;
}

// Average jitter-buffer delay over the last period (the cumulative average hides changes).
function jitterDelay(now, before) {
  if (!now || now.jitterBufferDelay === undefined) return NaN;
  const count = now.jitterBufferEmittedCount - (before?.jitterBufferEmittedCount || 0);
  const delay = now.jitterBufferDelay - (before?.jitterBufferDelay || 0);
  if (count > 0) return delay / count;
  return now.jitterBufferEmittedCount ? now.jitterBufferDelay / now.jitterBufferEmittedCount : NaN;
}

async function serverLatency(sessionId) {
  try {
    const resp = await apiFetch(`api/sessions/${sessionId}`);
    if (!resp.ok) return null;
    const body = await resp.json();
    return typeof body.audio_to_frame_ms === "number" ? body.audio_to_frame_ms / 1000 : null;
  } catch {
    return null;
  }
}

async function updateStats(thisCall) {
  const pc = thisCall.pc;
  if (!pc || thisCall.stopped) return;
  const [report, latency] = await Promise.all([pc.getStats(), serverLatency(thisCall.sessionId)]);
  const video = inbound(report, "video");
  const audio = inbound(report, "audio");
  const pair = selectedPair(report);
  const prev = thisCall.prevStats;
  const t = performance.now() / 1000;

  let fps = video?.framesPerSecond;
  if (video && prev?.video && fps === undefined) {
    fps = (video.framesDecoded - prev.video.framesDecoded) / (t - prev.t);
  }
  const stats = {
    t,
    fps: Number.isFinite(fps) ? fps : null,
    framesDecoded: video?.framesDecoded ?? 0,
    width: video?.frameWidth ?? null,
    height: video?.frameHeight ?? null,
    rtt: pair?.currentRoundTripTime ?? null,
    localCandidate: pair ? report.get(pair.localCandidateId)?.address ?? null : null,
    remoteCandidate: pair ? report.get(pair.remoteCandidateId)?.address ?? null : null,
    jitterVideo: jitterDelay(video, prev?.video),
    jitterAudio: jitterDelay(audio, prev?.audio),
    audioSamples: audio?.totalSamplesReceived ?? 0,
    audioLevel: audio?.audioLevel ?? null,
    serverLatency: latency,
  };
  thisCall.prevStats = { t, video, audio };
  state.stats = stats;
  state.history.push(stats);
  if (state.history.length > 600) state.history.shift();

  ui.fps.textContent = stats.fps === null ? "–" :
    `${stats.fps.toFixed(1)} fps${stats.width ? ` ${stats.width}×${stats.height}` : ""}`;
  ui.rtt.textContent = fmtMs(stats.rtt ?? NaN);
  ui.jbVideo.textContent = fmtMs(stats.jitterVideo);
  ui.jbAudio.textContent = fmtMs(stats.jitterAudio);
  ui.server.textContent = fmtMs(stats.serverLatency ?? NaN);
  ui.audioIn.textContent = stats.audioLevel === null ? "–" : `level ${stats.audioLevel.toFixed(2)}`;
}

// ---------------------------------------------------------------- wiring

ui.start.addEventListener("click", start);
ui.stop.addEventListener("click", stop);
ui.sound.addEventListener("change", () => { ui.video.muted = !ui.sound.checked; });
ui.video.addEventListener("click", () => { ui.video.muted = !ui.sound.checked; ui.video.play().catch(() => {}); });
ui.speechFile.addEventListener("change", updatePresenterButtons);
ui.speak.addEventListener("click", speakFile);
ui.interrupt.addEventListener("click", interruptSpeech);
navigator.mediaDevices?.addEventListener?.("devicechange", listMicrophones);
window.addEventListener("pagehide", () => { if (call) deleteSession(call.sessionId); });

if (!window.RTCPeerConnection) {
  fail("This browser has no WebRTC (RTCPeerConnection); use a current Chromium or Firefox.");
  ui.start.disabled = true;
} else {
  listMicrophones();
  listAvatars();
}
