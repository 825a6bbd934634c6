"""A real aiortc client for the server, and an in-process server on 127.0.0.1.

Used by the tests (``tests/server_harness.py``) and by the latency benchmarks.  The client's mic
is an ``AudioStreamTrack`` playing samples in real time (then silence); the client keeps every
video frame it decodes (its receive time and the mouth region) and every audio frame it receives.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Callable

import aiohttp
import av
import numpy as np
from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError

from realtime.ice import peer_configuration
from realtime.server import ServerConfig, create_app

MIC_RATE = 16000
MIC_CHUNK = MIC_RATE // 50


class WavMicTrack(AudioStreamTrack):
    """Plays float32 16 kHz samples as 20 ms s16 frames in real time, then silence (``loop``: again
    and again, for soaks that would otherwise hold an hour of samples)."""

    def __init__(self, samples: np.ndarray, loop: bool = False) -> None:
        super().__init__()
        self.pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
        self.loop = loop
        self.t0: float | None = None
        self.n = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self.t0 is None:
            self.t0 = time.monotonic()
        wait = self.t0 + self.n * 0.02 - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        chunk = np.zeros(MIC_CHUNK, np.int16)
        if self.loop:
            part = np.take(self.pcm, np.arange(self.n * MIC_CHUNK, (self.n + 1) * MIC_CHUNK), mode="wrap")
        else:
            part = self.pcm[self.n * MIC_CHUNK:(self.n + 1) * MIC_CHUNK]
        chunk[:part.size] = part
        frame = av.AudioFrame.from_ndarray(chunk[None, :], format="s16", layout="mono")
        frame.sample_rate = MIC_RATE
        frame.pts = self.n * MIC_CHUNK
        frame.time_base = fractions.Fraction(1, MIC_RATE)
        self.n += 1
        return frame

    def elapsed(self, now: float) -> float:
        """Seconds of the WAV played at ``now`` (monotonic)."""
        return 0.0 if self.t0 is None else now - self.t0


@dataclass
class Client:
    pc: RTCPeerConnection
    session_id: str
    mouth_box: tuple[int, int, int, int] | None
    mic: WavMicTrack | None = None
    video: list[tuple[float, np.ndarray]] = field(default_factory=list)  # (recv time, mouth RGB)
    video_pts: list[int] = field(default_factory=list)
    audio: list[tuple[float, np.ndarray]] = field(default_factory=list)  # (recv time, mono int16)
    tasks: list[asyncio.Task] = field(default_factory=list)
    keep_frames: bool = True
    luma: bool = False  # crop the decoded Y plane instead of converting the frame to RGB (cheaper)
    # reduce what is kept per frame (long runs): the mouth crop -> one value, 16-bit PCM -> one value
    video_stat: Callable[[np.ndarray], float] | None = None
    audio_stat: Callable[[np.ndarray], float] | None = None

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.pc.close()


async def _consume(client: Client, track) -> None:  # noqa: ANN001
    try:
        while True:
            frame = await track.recv()
            now = time.monotonic()
            if track.kind == "video":
                client.video_pts.append(frame.pts)
                if client.keep_frames and client.mouth_box is not None:
                    x0, y0, x1, y1 = client.mouth_box
                    if client.luma:
                        plane = frame.planes[0]
                        crop = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[y0:y1, x0:x1]
                    else:
                        crop = frame.to_ndarray(format="rgb24")[y0:y1, x0:x1]
                    client.video.append((now, client.video_stat(crop) if client.video_stat else crop.copy()))
                else:
                    client.video.append((now, np.zeros(0, np.uint8)))
            else:
                pcm = frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0]
                client.audio.append((now, client.audio_stat(pcm) if client.audio_stat else pcm.copy()))
    except MediaStreamError:
        pass


async def connect(base: str, http: aiohttp.ClientSession, *, mic: np.ndarray | None = None,
                  mouth_box: tuple[int, int, int, int] | None = None, avatar: str | None = None,
                  keep_frames: bool = True, video_stat: Callable[[np.ndarray], float] | None = None,
                  audio_stat: Callable[[np.ndarray], float] | None = None, mic_loop: bool = False,
                  luma: bool = False) -> Client:
    """Offer/answer with the server; returns once the answer is applied (media flows soon after)."""
    pc = RTCPeerConnection(configuration=peer_configuration())
    mic_track = WavMicTrack(mic, loop=mic_loop) if mic is not None else None
    if mic_track is not None:
        pc.addTrack(mic_track)
    else:
        pc.addTransceiver("audio", direction="recvonly")
    pc.addTransceiver("video", direction="recvonly")
    client = Client(pc, "", mouth_box, mic_track, keep_frames=keep_frames, video_stat=video_stat,
                    audio_stat=audio_stat, luma=luma)

    @pc.on("track")
    def on_track(track) -> None:  # noqa: ANN001
        client.tasks.append(asyncio.ensure_future(_consume(client, track)))

    await pc.setLocalDescription(await pc.createOffer())
    body = {"sdp": pc.localDescription.sdp, "type": "offer"}
    if avatar:
        body["avatar"] = avatar
    async with http.post(f"{base}/offer", json=body) as resp:
        data = await resp.json()
        if resp.status != 200:
            await pc.close()
            raise AssertionError(f"offer failed: {resp.status} {data}")
    client.session_id = data["session_id"]
    await pc.setRemoteDescription(RTCSessionDescription(sdp=data["sdp"], type=data["type"]))
    return client


@asynccontextmanager
async def serving(engine, **config):  # noqa: ANN001, ANN201
    """A running server on a free 127.0.0.1 port; yields (base_url, app)."""
    app = create_app(ServerConfig(port=0, **config), engine=engine)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        await runner.cleanup()
