"""The avatar on a lipstream server elsewhere: :class:`RemoteAvatar`, the remote mode of the Pipecat
and LiveKit adapters (``backends.py`` holds the output types and the in-process avatar).

A receive-only WebRTC presenter session (aiortc; video frames released at their last packet,
``realtime/video_receiver.py``) brings back the video and the returned speech; the session's
streaming WebSocket (``realtime/stream_api.py``) takes the speech in and sends the events.
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np

from realtime.integrations.backends import AvatarAudio, AvatarEvent, AvatarVideo, Pacing, discard_media

log = logging.getLogger(__name__)

__all__ = ["RemoteAvatar"]


class _SendWindow:
    """The sender's own estimate of the server's unplayed speech (a bucket draining at real time),
    so that a TTS which delivers a segment faster than real time never overfills the bounded
    buffer.  The server's ``backpressure`` event alone comes one WebSocket round trip late: by
    then a burst has gone out whole and the server dropped what did not fit (a 4.6 s segment sent
    at once lost its last 1.6 s to a 3 s buffer).  ``MARGIN_S`` covers the playout's start delay."""

    MARGIN_S = 0.5

    def __init__(self, max_buffer_s: float) -> None:
        self.max_buffer_s = max_buffer_s
        self.queued_s = 0.0
        self._at = 0.0

    def _drain(self, now: float) -> None:
        self.queued_s = max(0.0, self.queued_s - (now - self._at))
        self._at = now

    def wait_s(self, seconds: float, now: float) -> float:
        """How long to wait before ``seconds`` more speech fits."""
        self._drain(now)
        room = max(self.max_buffer_s - self.MARGIN_S, seconds)  # a chunk bigger than the window still goes
        return max(0.0, self.queued_s + seconds - room)

    def sent(self, seconds: float, now: float) -> None:
        self._drain(now)
        self.queued_s += seconds

    def reset(self) -> None:
        self.queued_s = 0.0




class RemoteAvatar:
    """A lipstream server: a receive-only WebRTC presenter session plus the speech WebSocket.

    ``base_url``: e.g. ``http://127.0.0.1:8080``; ``rate``: the WebSocket's PCM rate (16000, 24000
    or 48000; other input rates are resampled to it here); ``token``: the server's ``--token``.
    The audio that comes out is the server's returned speech track (48 kHz), ``speech`` True from
    ``speech_started`` until, after ``speech_ended``, the returned audio has gone silent: the
    WebSocket's events outrun the WebRTC audio (by its jitter buffer, and by far more on a loaded
    machine), so the segment's end is read off the audio itself, and ``speech_ended`` is handed
    on only then (a Pipecat ``TTSStoppedFrame`` then follows the segment's last audio).
    ``interrupted`` ends the speech at once.
    """

    MAX_TAIL_S = 3.0  # after speech_ended, the longest the returned audio is waited for to go silent
    SILENT = 4  # a returned 20 ms packet is silence when no sample exceeds this (int16)

    def __init__(self, base_url: str, *, rate: int = 24000, avatar: str | None = None,
                 token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.rate = rate
        self.avatar = avatar
        self.output: asyncio.Queue = asyncio.Queue()
        self.session_id: str | None = None
        self._pacing = Pacing()
        self._window = _SendWindow(3.0)  # the server's default; its 'session' event says the real one
        self._http = None
        self._pc = None
        self._ws = None
        self._tasks: list[asyncio.Task] = []
        self._resampler = None
        self._speaking = False
        self._ending: list[dict] = []  # speech_ended events held until the returned audio ends
        self._tail_timer: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        import aiohttp
        from aiortc import RTCPeerConnection, RTCSessionDescription

        from realtime.audio_io import Resampler
        from realtime.ice import peer_configuration
        from realtime.video_receiver import release_frames_on_marker

        self._resampler = Resampler(out_rate=self.rate)
        self._http = aiohttp.ClientSession(headers=self._headers)  # --token servers: on every request
        pc = self._pc = RTCPeerConnection(configuration=peer_configuration())
        pc.addTransceiver("audio", direction="recvonly")
        pc.addTransceiver("video", direction="recvonly")
        release_frames_on_marker(pc)  # each frame at its last packet, not one frame later (aiortc's default)

        @pc.on("track")
        def on_track(track) -> None:  # noqa: ANN001
            self._tasks.append(asyncio.ensure_future(self._consume(track)))

        await pc.setLocalDescription(await pc.createOffer())  # aiortc gathers its candidates here
        body = {"sdp": pc.localDescription.sdp, "type": "offer"}
        if self.avatar:
            body["avatar"] = self.avatar
        async with self._http.post(f"{self.base_url}/offer", json=body) as r:
            answer = await r.json()
            if r.status != 200:
                await self.stop()
                raise RuntimeError(f"lipstream server refused the offer: {r.status} {answer.get('error')}")
        self.session_id = answer["session_id"]
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        self._ws = await self._http.ws_connect(
            f"{self.base_url}/api/sessions/{self.session_id}/stream?rate={self.rate}")
        self._tasks.append(asyncio.ensure_future(self._read_events()))

    async def _consume(self, track) -> None:  # noqa: ANN001
        from aiortc.mediastreams import MediaStreamError

        try:
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    self.output.put_nowait(AvatarVideo(frame.to_ndarray(format="rgb24")))
                else:
                    pcm = frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0].astype(np.int16)
                    if self._ending and int(np.abs(pcm.astype(np.int32)).max(initial=0)) <= self.SILENT:
                        self._end_speech()  # the segment's audio has all come back
                    self.output.put_nowait(AvatarAudio(pcm, frame.sample_rate, self._speaking))
        except MediaStreamError:
            pass

    async def _read_events(self) -> None:
        import aiohttp

        loop = asyncio.get_running_loop()
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            event = msg.json()
            kind = event.get("type")
            self._pacing.on_event(event)
            if kind == "session":
                self._window.max_buffer_s = float(event.get("max_buffer_s", self._window.max_buffer_s))
            elif kind == "speech_started":
                self._end_speech()  # a previous segment's held end goes first
                self._speaking = True
            elif kind == "speech_ended":
                self._ending.append(event)  # handed on once its audio is back (or MAX_TAIL_S)
                if self._tail_timer is None:
                    self._tail_timer = loop.call_later(self.MAX_TAIL_S, self._end_speech)
                continue
            elif kind in ("interrupted", "closed"):
                self._end_speech()
            self.output.put_nowait(AvatarEvent(event))

    def _end_speech(self) -> None:
        """The speech flag drops; held ``speech_ended`` events go out, after the audio before them."""
        if self._tail_timer is not None:
            self._tail_timer.cancel()
            self._tail_timer = None
        self._speaking = False
        held, self._ending = self._ending, []
        for event in held:
            self.output.put_nowait(AvatarEvent(event))

    async def push(self, pcm: np.ndarray, rate: int) -> None:
        """Send speech; waits while the server's buffer would overflow (our own estimate, and the
        server's ``backpressure`` until ``resume``)."""
        if rate != self.rate:
            pcm = (np.clip(self._resampler.push(pcm, rate), -1, 1) * 32767).astype(np.int16)
        if not pcm.size:
            return
        loop = asyncio.get_running_loop()
        seconds = pcm.size / self.rate
        while (wait := self._window.wait_s(seconds, loop.time())) > 0:
            await asyncio.sleep(wait)
        await self._pacing.ready.wait()
        self._window.sent(seconds, loop.time())
        await self._ws.send_bytes(np.asarray(pcm, "<i2").tobytes())

    async def flush(self) -> None:
        if self._resampler is not None:
            tail = self._resampler.flush()
            if tail.size:
                await self._ws.send_bytes((np.clip(tail, -1, 1) * 32767).astype("<i2").tobytes())
        await self._ws.send_str('{"type": "flush"}')

    async def clear(self) -> None:
        self._pacing.ready.set()
        self._window.reset()
        self._end_speech()
        discard_media(self.output)
        await self._ws.send_str('{"type": "clear"}')

    async def stop(self) -> None:
        if self._tail_timer is not None:
            self._tail_timer.cancel()
            self._tail_timer = None
        if self._ws is not None and not self._ws.closed:
            await self._ws.close()
        if self._http is not None and self.session_id is not None:
            try:
                async with self._http.delete(f"{self.base_url}/api/sessions/{self.session_id}"):
                    pass
            except Exception as exc:  # the server may be gone already
                log.debug("closing the remote session: %r", exc)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._pc is not None:
            await self._pc.close()
            self._pc = None
        if self._http is not None:
            await self._http.close()
            self._http = None
