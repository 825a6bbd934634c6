"""Latency through the agent-framework and WHIP/WHEP paths: first audio in -> first moving frame
out, and interrupt (or the end of the speech) -> mouth closed.

    .venv-agents/bin/python -m benchmarks.bench_integrations [--trials 10] [--paths pipecat-remote,...]

Run it from the agents environment (Pipecat and LiveKit need protobuf >= 5; docs/integrations.md);
a path whose framework is missing is skipped with its reason.  Paths:

* ``pipecat-remote``: a Pipecat pipeline (``PipelineWorker``) ``LipstreamVideoService(url=...)`` ->
  a recorder, against an in-process lipstream server on 127.0.0.1: speech over the WebSocket,
  video decoded from the server's WebRTC track inside the service;
* ``pipecat-inprocess``: the same pipeline with the engine inside it (``LipstreamVideoService()``);
* ``livekit``: ``LipstreamVideoGenerator`` in-process, driven as ``AvatarRunner`` drives it
  (``push_audio`` of ``rtc.AudioFrame`` s, ``clear_buffer``, its async iterator of frames);
* ``whip``: an aiortc WHIP publisher whose microphone plays speech bursts (Opus, 20 ms packets)
  and an aiortc WHEP viewer of the paired avatar decoding the video (aiortc, not a browser; its
  frames released at their last packet as a browser does, ``realtime/video_receiver.py``).

Each trial: the mouth at rest, 1.5 s of the bundled sample (cut to its onset) sent in 20 ms chunks
at real time (Pipecat: ``TTSAudioRawFrame`` s at 24 kHz; LiveKit: ``rtc.AudioFrame`` s at 24 kHz;
WHIP: the mic), then an interrupt (Pipecat: ``InterruptionFrame``; LiveKit: ``clear_buffer``; WHIP
has none: the speech simply stops, so its second figure is speech end -> mouth closed, which
includes the model's window running out).  Measured on the frames *coming out* (the recorder,
the iterator, the WHEP viewer's decoded frames): the mouth box's dark-pixel share, read per trial
against its rest level (``latency_trials.pixel_trial``, the same reading as ``bench_stream_api``'s
client side).  The machine's load average is recorded before and after: on a shared machine it
says how much to trust the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Awaitable, Callable

import numpy as np

from benchmarks.latency_trials import load_average, pixel_trial, raw_ms, send_paced, series, speech_from_onset
from benchmarks.latency_trials import summarize_rows
from benchmarks.machine import RESULTS_DIR, machine_info, write_result

PATHS = ("pipecat-remote", "pipecat-inprocess", "livekit", "whip")
RATE = 24000  # the TTS's rate (Pipecat, LiveKit)
SPEAK_S, REST_S, WATCH_S = 1.5, 1.2, 0.8


def _dark(box: tuple[int, int, int, int]) -> Callable[[np.ndarray], float]:
    from benchmarks.bench_server_latency import dark_share

    x0, y0, x1, y1 = box
    return lambda rgb: dark_share(rgb[y0:y1, x0:x1])


async def _trials(trials: int, send: Callable[[np.ndarray], Awaitable[None]], interrupt: Callable[[], Awaitable[None]],
                  pcm: np.ndarray, before: Callable[[], Awaitable[None]] | None = None) -> list[tuple[float, float]]:
    """(t_send, t_clear) per trial: rest, SPEAK_S of speech at real time in 20 ms chunks, interrupt."""
    marks = []
    await asyncio.sleep(2.0)  # first frames out, the mouth at rest
    for i in range(trials):
        await asyncio.sleep(REST_S)
        if before is not None:
            await before()
        t_send = await send_paced(send, pcm[:int(SPEAK_S * RATE)], RATE, RATE // 50)
        t_clear = time.monotonic()
        await interrupt()
        await asyncio.sleep(WATCH_S)
        marks.append((t_send, t_clear))
        print(f"\r  trial {i + 1}/{trials}", end="", flush=True)
    print()
    return marks


async def _pipecat(trials: int, engine, box, url: str | None) -> tuple[list, list]:  # noqa: ANN001
    from pipecat.frames.frames import EndFrame, InterruptionFrame, OutputImageRawFrame, TTSAudioRawFrame, TTSStartedFrame
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineWorker
    from pipecat.processors.frame_processor import FrameProcessor
    from pipecat.workers.runner import WorkerRunner

    from realtime.integrations.pipecat import LipstreamVideoService

    frames: list[tuple[float, float]] = []
    dark = _dark(box)

    class Recorder(FrameProcessor):
        async def process_frame(self, frame, direction) -> None:  # noqa: ANN001
            await super().process_frame(frame, direction)
            if isinstance(frame, OutputImageRawFrame):
                w, h = frame.size
                frames.append((time.monotonic(), dark(np.frombuffer(frame.image, np.uint8).reshape(h, w, 3))))
            await self.push_frame(frame, direction)

    service = LipstreamVideoService(url=url, sample_rate=RATE) if url else LipstreamVideoService(engine=engine,
                                                                                                  sample_rate=RATE)
    worker = PipelineWorker(Pipeline([service, Recorder()]), cancel_on_idle_timeout=False)
    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def _on_started(_worker, _frame) -> None:  # noqa: ANN001
        started.set()

    runner = WorkerRunner()
    await runner.add_workers(worker)
    running = asyncio.ensure_future(runner.run())
    await asyncio.wait_for(started.wait(), 60)
    pcm = (np.clip(speech_from_onset(RATE), -1, 1) * 32767).astype(np.int16)

    async def send(part: np.ndarray) -> None:
        await worker.queue_frame(TTSAudioRawFrame(audio=part.tobytes(), sample_rate=RATE, num_channels=1))

    marks = await _trials(trials, send, lambda: worker.queue_frame(InterruptionFrame()), pcm,
                          before=lambda: worker.queue_frame(TTSStartedFrame()))
    await worker.queue_frame(EndFrame())
    await asyncio.wait_for(running, 30)
    return frames, marks


async def _livekit(trials: int, engine, box) -> tuple[list, list]:  # noqa: ANN001
    from livekit import rtc

    from realtime.integrations.livekit import LipstreamVideoGenerator

    frames: list[tuple[float, float]] = []
    dark = _dark(box)
    gen = LipstreamVideoGenerator(engine=engine, sample_rate=RATE)
    await gen.start()

    async def consume() -> None:
        async for item in gen:
            if isinstance(item, rtc.VideoFrame):
                rgb = np.frombuffer(item.data, np.uint8).reshape(item.height, item.width, 3)
                frames.append((time.monotonic(), dark(rgb)))

    task = asyncio.ensure_future(consume())
    pcm = (np.clip(speech_from_onset(RATE), -1, 1) * 32767).astype(np.int16)

    async def send(part: np.ndarray) -> None:
        await gen.push_audio(rtc.AudioFrame(part.tobytes(), RATE, 1, part.size))

    marks = await _trials(trials, send, gen.clear_buffer, pcm)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await gen.aclose()
    return frames, marks


async def _whep_viewer(http, url: str, frames: list, dark) -> tuple:  # noqa: ANN001
    from aiortc import RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import MediaStreamError

    from realtime.ice import peer_configuration

    from realtime.video_receiver import release_frames_on_marker

    pc = RTCPeerConnection(configuration=peer_configuration())
    pc.addTransceiver("video", direction="recvonly")
    release_frames_on_marker(pc)
    tasks: list[asyncio.Task] = []

    async def consume(track) -> None:  # noqa: ANN001
        try:
            while True:
                frame = await track.recv()
                frames.append((time.monotonic(), dark(frame.to_ndarray(format="rgb24"))))
        except MediaStreamError:
            pass

    pc.on("track", lambda track: tasks.append(asyncio.ensure_future(consume(track))))
    await pc.setLocalDescription(await pc.createOffer())
    async with http.post(url, data=pc.localDescription.sdp, headers={"Content-Type": "application/sdp"}) as r:
        if r.status != 201:
            raise RuntimeError(f"WHEP POST {url}: {r.status} {await r.text()}")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=await r.text(), type="answer"))
    return pc, tasks


async def _whip(trials: int, engine, box) -> tuple[list, list]:  # noqa: ANN001
    import aiohttp
    from aiortc import RTCPeerConnection, RTCSessionDescription

    from benchmarks.webrtc_client import WavMicTrack, serving
    from realtime.ice import peer_configuration

    speech = speech_from_onset(16000)[:int(SPEAK_S * 16000)]
    period = SPEAK_S + REST_S + WATCH_S + 0.5
    lead = 3.0  # connect, first frames, rest
    mic = np.zeros(int((lead + trials * period + 1.0) * 16000), np.float32)
    onsets = [lead + i * period for i in range(trials)]
    for t in onsets:
        mic[int(t * 16000):int(t * 16000) + speech.size] = speech
    frames: list[tuple[float, float]] = []
    async with serving(engine) as (base, _), aiohttp.ClientSession() as http:
        pub = RTCPeerConnection(configuration=peer_configuration())
        track = WavMicTrack(mic)
        pub.addTransceiver(track, direction="sendonly")
        await pub.setLocalDescription(await pub.createOffer())
        async with http.post(f"{base}/whip", data=pub.localDescription.sdp,
                             headers={"Content-Type": "application/sdp"}) as r:
            if r.status != 201:
                raise RuntimeError(f"WHIP POST: {r.status} {await r.text()}")
            location = r.headers["Location"]
            await pub.setRemoteDescription(RTCSessionDescription(sdp=await r.text(), type="answer"))
        viewer, tasks = await _whep_viewer(http, f"{base}/whep/{location.rsplit('/', 1)[-1]}", frames, _dark(box))
        while track.t0 is None:
            await asyncio.sleep(0.01)
        end = track.t0 + lead + trials * period
        while time.monotonic() < end:
            await asyncio.sleep(0.25)
            print(f"\r  {min(trials, int((time.monotonic() - track.t0 - lead) // period) + 1)}/{trials}", end="",
                  flush=True)
        print()
        async with http.delete(base + location):
            pass
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await viewer.close()
        await pub.close()
    # the mic frame holding sample i is handed to aiortc at t0 + (i // 320) * 20 ms (WavMicTrack's pacing)
    marks = [(track.t0 + t, track.t0 + t + SPEAK_S) for t in onsets]
    return frames, marks


def _rows(frames: list, marks: list) -> list[dict]:
    times, dark = series(frames)
    rows = []
    for t_send, t_clear in marks:
        moving, closed = pixel_trial(times, dark, t_send, t_clear, WATCH_S)
        rows.append({"first_moving_s": moving, "closed_s": closed})
    return rows


async def run_path(name: str, trials: int, engine_name: str) -> dict:
    from engines.factory import create_engine
    from export.avatar import ensure_default_avatar

    engine = create_engine(engine_name)
    box = tuple(int(v) for v in ensure_default_avatar().mouth_boxes[0])
    before = load_average()
    t0 = time.monotonic()
    if name == "pipecat-remote":
        from benchmarks.webrtc_client import serving

        async with serving(engine) as (base, _):
            frames, marks = await _pipecat(trials, None, box, base)
    elif name == "pipecat-inprocess":
        frames, marks = await _pipecat(trials, engine, box, None)
    elif name == "livekit":
        frames, marks = await _livekit(trials, engine, box)
    else:
        frames, marks = await _whip(trials, engine, box)
    rows = _rows(frames, marks)
    fps = (len(frames) - 1) / (frames[-1][0] - frames[0][0]) if len(frames) > 1 else None
    return {"engine": engine.name, **summarize_rows(rows), "frames_per_s": fps,
            "load_average": {"before": before, "after": load_average()}, "wall_s": round(time.monotonic() - t0, 1),
            "trials_raw": raw_ms(rows)}


SECOND = {"whip": "speech end -> mouth closed (WHEP viewer)"}
FIRST = {
    "pipecat-remote": "first TTSAudioRawFrame queued -> first moving OutputImageRawFrame out (remote server)",
    "pipecat-inprocess": "first TTSAudioRawFrame queued -> first moving OutputImageRawFrame out (in-process)",
    "livekit": "first push_audio -> first moving rtc.VideoFrame from the iterator (in-process)",
    "whip": "first speech packet sent (WHIP) -> first moving frame decoded (WHEP viewer)",
}


def print_table(result: dict) -> None:
    print(f"\n{'path':<19}{'measure':<88}{'p50 ms':>8}{'p95 ms':>8}{'n':>4}")
    for name, r in result["paths"].items():
        if "skipped" in r:
            print(f"{name:<19}skipped: {r['skipped']}")
            continue
        for key, label in (("first_moving_s", FIRST[name]),
                           ("closed_s", SECOND.get(name, "interrupt -> mouth closed for good"))):
            s = r.get(key)
            cells = f"{s['p50_ms']:>8.1f}{s['p95_ms']:>8.1f}{s['n']:>4}" if s else f"{'-':>8}"
            print(f"{name:<19}{label:<88}{cells}")
        load = r["load_average"]
        print(f"{'':<19}load average (1 min) {load['before']['1min']} -> {load['after']['1min']} on "
              f"{load['before']['cores']} cores; {r['frames_per_s'] or 0:.1f} frames/s out")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_integrations", description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated, of {', '.join(PATHS)}")
    p.add_argument("--engine", default="auto")
    p.add_argument("--json", type=Path, default=RESULTS_DIR / "integrations.json")
    p.add_argument("--update", action="store_true",
                   help="keep the paths not measured now from an existing --json (one path per run)")
    args = p.parse_args(argv)
    paths = [x.strip() for x in args.paths.split(",") if x.strip()]
    unknown = [x for x in paths if x not in PATHS]
    if unknown:
        p.error(f"unknown path(s) {', '.join(unknown)}: choose from {', '.join(PATHS)}")
    result = {"benchmark": "integrations", "machine": machine_info(),
              "settings": {"trials": args.trials, "tts_rate": RATE, "chunk_ms": 20, "speak_s": SPEAK_S,
                           "rest_s": REST_S, "watch_s": WATCH_S, "reading": "mouth-box dark share per trial"},
              "paths": {}}
    for name in paths:
        print(f"{name}:")
        try:
            result["paths"][name] = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                     **asyncio.run(run_path(name, args.trials, args.engine))}
        except ImportError as exc:
            result["paths"][name] = {"skipped": f"{exc} (run from the agents environment)"}
    if args.update and args.json.is_file():  # keep the other paths' last figures
        import json

        kept = json.loads(args.json.read_text()).get("paths", {})
        result["paths"] = {**{k: v for k, v in kept.items() if k not in result["paths"]}, **result["paths"]}
    print_table(result)
    write_result(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
