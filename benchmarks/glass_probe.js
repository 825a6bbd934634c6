// Measurement probe for benchmarks/bench_glass.py (glass-to-glass latency in real Chromium).
//
// Installed with Playwright's `add_init_script`, so it runs before the client page's own
// scripts.  It changes nothing the page does; it only watches, and keeps raw time series in
// `window.__glass`, every timestamp on the page's `performance.now()` clock (ms).  Onsets are
// detected in Python from these series.
//
//  * getUserMedia is wrapped: the microphone MediaStream the page sends is also watched.
//  * RTCPeerConnection is wrapped: every peer is kept (getStats at the end), and its remote audio
//    track (the speech the server sends back) is watched.
//  * fetch is wrapped: the mouth box comes from the POST /offer answer (`mouth_box`).
//  * #video gets a requestVideoFrameCallback loop: per presented frame, the rVFC metadata and the
//    share of dark pixels (luma < DARK_LUMA) inside the mouth box, read back from a canvas.
//
// Each audio track is watched two ways:
//  * a WebAudio meter: AudioWorklet, one RMS per 128-sample render quantum, tagged with the
//    quantum's context frame; the main thread stamps each message with performance.now() when
//    it arrives.  A message cannot arrive before its quanta were rendered, so Python maps context
//    time to render time with the lower envelope of (arrival - context time).  Render time trails
//    capture by WebAudio's own input buffering (~10-15 ms measured).
//  * a tap: MediaStreamTrackProcessor (Chromium), AudioData in 10 ms chunks whose `timestamp` is
//    the capture time (mic) or the time the audio was handed out for playout (remote track),
//    RMS per ~2.5 ms sub-block.  Absent in browsers without MediaStreamTrackProcessor.
(() => {
  "use strict";
  const DARK_LUMA = 70;
  const QUANTA_PER_MESSAGE = 4;
  const TAP_BLOCK_S = 0.0025;
  const G = window.__glass = {
    mouthBox: null, pcs: [], meters: {}, taps: {}, frames: [], errors: [], context: null, micSettings: null,
  };
  const err = (where, e) => G.errors.push(`${where}: ${(e && (e.stack || e.message)) || e}`);

  // ------------------------------------------------------------------ WebAudio meters
  const WORKLET = `
    class GlassMeter extends AudioWorkletProcessor {
      constructor() { super(); this.buf = []; this.start = -1; }
      process(inputs) {
        const ch = inputs[0] && inputs[0][0];
        let sum = 0;
        if (ch) { for (let i = 0; i < ch.length; i++) sum += ch[i] * ch[i]; }
        if (this.start < 0) this.start = currentFrame;
        this.buf.push(ch ? Math.sqrt(sum / ch.length) : 0);
        if (this.buf.length >= ${QUANTA_PER_MESSAGE}) {
          this.port.postMessage({ start: this.start, rms: this.buf });
          this.buf = []; this.start = -1;
        }
        return true;
      }
    }
    registerProcessor("glass-meter", GlassMeter);`;
  let contextReady = null;

  function audioContext() {
    if (!contextReady) {
      const ctx = G.context = new AudioContext({ latencyHint: "interactive" });
      const url = URL.createObjectURL(new Blob([WORKLET], { type: "application/javascript" }));
      contextReady = ctx.audioWorklet.addModule(url).then(() => {
        if (ctx.state !== "running") ctx.resume().catch((e) => err("AudioContext.resume", e));
        return ctx;
      });
    }
    return contextReady;
  }

  async function meter(name, stream) {
    try {
      const ctx = await audioContext();
      const m = G.meters[name] = { chunks: [] };
      const node = new AudioWorkletNode(ctx, "glass-meter", { numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1] });
      node.port.onmessage = (ev) => { m.chunks.push([performance.now(), ev.data.start, ev.data.rms]); };
      ctx.createMediaStreamSource(stream).connect(node);
      node.connect(ctx.destination);  // so the graph pulls it; it outputs silence
      m.node = node;  // keep it alive
    } catch (e) {
      err(`meter ${name}`, e);
    }
  }

  // ------------------------------------------------------------------ MediaStreamTrackProcessor taps
  function tap(name, track) {
    if (!window.MediaStreamTrackProcessor) return;
    const t = G.taps[name] = { chunks: [] };
    const reader = new MediaStreamTrackProcessor({ track }).readable.getReader();
    (async () => {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        const n = value.numberOfFrames;
        const buf = new Float32Array(n);
        value.copyTo(buf, { planeIndex: 0, format: "f32-planar" });
        const blocks = Math.max(1, Math.round(n / (value.sampleRate * TAP_BLOCK_S)));
        const size = Math.ceil(n / blocks);
        const rms = [];
        for (let b = 0; b < n; b += size) {
          let s = 0;
          const e = Math.min(n, b + size);
          for (let i = b; i < e; i++) s += buf[i] * buf[i];
          rms.push(Math.sqrt(s / (e - b)));
        }
        t.chunks.push([performance.now(), value.timestamp / 1000, n / value.sampleRate * 1000, rms]);
        value.close();
      }
    })().catch((e) => err(`tap ${name}`, e));
  }

  // ------------------------------------------------------------------ microphone
  const md = navigator.mediaDevices;
  if (md && md.getUserMedia) {
    const original = md.getUserMedia.bind(md);
    md.getUserMedia = async (constraints) => {
      const stream = await original(constraints);
      const [track] = stream.getAudioTracks();
      if (track) {
        G.micSettings = track.getSettings();
        meter("mic", stream);
        tap("mic", track);
      }
      return stream;
    };
  }

  // ------------------------------------------------------------------ peer connection
  const NativePC = window.RTCPeerConnection;
  if (NativePC) {
    class WatchedPC extends NativePC {
      constructor(...args) {
        super(...args);
        G.pcs.push(this);
        this.addEventListener("track", (ev) => {
          // A lever under test (bench_glass --receiver-target-ms): the receivers' jitterBufferTarget.
          if (typeof window.__glassReceiverTargetMs === "number" && "jitterBufferTarget" in ev.receiver) {
            ev.receiver.jitterBufferTarget = window.__glassReceiverTargetMs;
          }
          if (ev.track.kind !== "audio") return;
          meter("ret", new MediaStream([ev.track]));
          tap("ret", ev.track);
        });
      }
    }
    window.RTCPeerConnection = WatchedPC;
  }

  // ------------------------------------------------------------------ the offer's answer: mouth box
  const nativeFetch = window.fetch.bind(window);
  window.fetch = async (input, init) => {
    const resp = await nativeFetch(input, init);
    const url = typeof input === "string" ? input : input.url;
    if (/(^|\/)offer$/.test(url) && resp.ok) {
      resp.clone().json().then((body) => { if (Array.isArray(body.mouth_box)) G.mouthBox = body.mouth_box; })
        .catch((e) => err("offer answer", e));
    }
    return resp;
  };

  // ------------------------------------------------------------------ presented frames
  function watchVideo() {
    const video = document.getElementById("video");
    if (!video || !video.requestVideoFrameCallback) {
      err("video", "no #video element or no requestVideoFrameCallback");
      return;
    }
    const canvas = document.createElement("canvas");
    const g = canvas.getContext("2d", { willReadFrequently: true });
    const onFrame = (now, meta) => {
      let dark = null, luma = null;
      const box = G.mouthBox;
      try {
        if (box) {
          const [x0, y0, x1, y1] = box, w = x1 - x0, h = y1 - y0;
          if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
          g.drawImage(video, x0, y0, w, h, 0, 0, w, h);
          const px = g.getImageData(0, 0, w, h).data;
          let n = 0, s = 0;
          for (let i = 0; i < px.length; i += 4) {
            const y = 0.299 * px[i] + 0.587 * px[i + 1] + 0.114 * px[i + 2];
            s += y;
            if (y < DARK_LUMA) n++;
          }
          dark = n / (w * h);
          luma = s / (w * h);
        }
      } catch (e) { err("frame", e); }
      // [callback now, expectedDisplayTime, presentationTime, receiveTime, rtpTimestamp,
      //  presentedFrames, processingDuration (s), dark share, mean luma]
      G.frames.push([now, meta.expectedDisplayTime, meta.presentationTime, meta.receiveTime ?? null,
        meta.rtpTimestamp ?? null, meta.presentedFrames, meta.processingDuration ?? null, dark, luma]);
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", watchVideo);
  else watchVideo();

  // ------------------------------------------------------------------ read-out
  G.stats = async () => {
    const pc = G.pcs[G.pcs.length - 1];
    if (!pc) return null;
    const out = { t: performance.now() };
    (await pc.getStats()).forEach((s) => {
      if (s.type === "inbound-rtp") out[s.kind || s.mediaType] = s;
      if (s.type === "outbound-rtp" && (s.kind || s.mediaType) === "audio") out.audio_out = s;
      if (s.type === "media-playout") out.playout = s;  // the audio output path's own delay
    });
    return out;
  };
  // Everything recorded since `sinceMs` (performance.now()), as one serialisable object.
  G.collect = (sinceMs = 0) => {
    const pick = (src) => Object.fromEntries(Object.entries(src).map(([name, m]) =>
      [name, m.chunks.filter((c) => c[0] >= sinceMs)]));
    const ctx = G.context;
    return {
      now: performance.now(), mouthBox: G.mouthBox, micSettings: G.micSettings, errors: G.errors,
      audioContext: ctx ? { sampleRate: ctx.sampleRate, baseLatency: ctx.baseLatency,
        outputLatency: ctx.outputLatency, state: ctx.state } : null,
      meters: pick(G.meters), taps: pick(G.taps), frames: G.frames.filter((f) => f[0] >= sinceMs),
    };
  };
})();
