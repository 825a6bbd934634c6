"""A WHIP client over GStreamer's ``webrtcbin`` (Debian has no ``whipsink``): a WebRTC peer that is
not aiortc, publishing a WAV file as its microphone.  Not a test file: ``tests/test_whip_gstreamer.py``
runs it with the *system* ``python3`` (PyGObject from Debian's ``python3-gi``, not in the venv).

    python3 tests/gst_whip_client.py http://127.0.0.1:8080/whip speech.wav SECONDS [TOKEN]

Pipeline: ``filesrc ! wavparse ! audioconvert ! audioresample ! clocksync`` (real time) ``!
opusenc ! rtpopuspay ! webrtcbin``.  RFC 9725 by hand: the offer once ICE gathering is complete
(no trickle), ``POST`` as ``application/sdp`` -> ``201``, ``Location``, the answer; after
``SECONDS`` of publishing, ``DELETE`` the Location.  Prints one JSON line per step on stdout
(``{"step": "answer", "status": 201, "location": ...}``, ``{"step": "connected", ...}``,
``{"step": "deleted", "status": 200}``; ``{"step": "error", ...}`` and exit 1 on failure).
"""

from __future__ import annotations

import json
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

PIPELINE = ("filesrc location={wav} ! wavparse ! audioconvert ! audioresample ! audio/x-raw,rate=48000,channels=1 "
            "! clocksync ! opusenc ! rtpopuspay pt=111 ! application/x-rtp,media=audio,encoding-name=OPUS,payload=111 "
            "! webrtcbin name=pc bundle-policy=max-bundle")


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def http(method: str, url: str, body: bytes | None, token: str | None) -> tuple[int, dict, str]:
    headers = {"Content-Type": "application/sdp"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


class WhipClient:
    def __init__(self, endpoint: str, wav: str, seconds: float, token: str | None) -> None:
        loopback = urllib.parse.urlsplit(endpoint).hostname in ("127.0.0.1", "localhost", "::1")
        self.endpoint, self.seconds, self.token = endpoint, seconds, token
        self.loop = GLib.MainLoop()
        self.pipe = Gst.parse_launch(PIPELINE.format(wav=wav))
        self.pc = self.pipe.get_by_name("pc")
        if loopback:  # libnice skips loopback addresses; a loopback server offers only 127.0.0.1
            # (keep the agent's Python wrapper alive: PyGObject over-unrefs a freed one, a crash)
            self.ice = self.pc.get_property("ice-agent")
            self.ice.emit("add-local-ip-address", "127.0.0.1")
        self.pc.connect("on-negotiation-needed", self.on_negotiation_needed)
        self.pc.connect("notify::ice-gathering-state", self.on_gathering)
        self.pc.connect("notify::ice-connection-state", self.on_ice_state)
        self.resource: str | None = None
        self.offered = False
        self.rc = 0
        bus = self.pipe.get_bus()
        bus.add_signal_watch()
        bus.connect("message::error", self.on_error)

    def fail(self, **fields: object) -> None:
        say(step="error", **fields)
        self.rc = 1
        self.loop.quit()

    def on_error(self, _bus, msg) -> None:  # noqa: ANN001 - GStreamer objects
        err, debug = msg.parse_error()
        self.fail(message=str(err), debug=debug)

    def on_negotiation_needed(self, pc) -> None:  # noqa: ANN001
        pc.emit("create-offer", None, Gst.Promise.new_with_change_func(self.on_offer, None))

    def on_offer(self, promise, _data) -> None:  # noqa: ANN001
        reply = promise.get_reply()
        offer = reply.get_value("offer") if reply is not None and reply.has_field("offer") else None
        if offer is None:
            self.fail(message=f"webrtcbin made no offer: {reply.to_string() if reply is not None else None}")
            return
        self.pc.emit("set-local-description", offer, None)

    def on_gathering(self, pc, _param) -> None:  # noqa: ANN001
        if pc.get_property("ice-gathering-state") == GstWebRTC.WebRTCICEGatheringState.COMPLETE and not self.offered:
            self.offered = True
            GLib.idle_add(self.post_offer)

    def post_offer(self) -> bool:
        sdp = self.pc.get_property("local-description").sdp.as_text()
        say(step="offer", candidates=[ln for ln in sdp.splitlines() if ln.startswith("a=candidate")])
        threading.Thread(target=self._post, args=(sdp,), daemon=True).start()
        return False

    def _post(self, sdp: str) -> None:
        status, headers, body = http("POST", self.endpoint, sdp.encode(), self.token)
        GLib.idle_add(self.on_answer, status, headers, body)

    def on_answer(self, status: int, headers: dict, body: str) -> bool:
        location = next((v for k, v in headers.items() if k.lower() == "location"), None)
        ctype = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
        say(step="answer", status=status, location=location, content_type=ctype,
            candidates=sum(line.startswith("a=candidate") for line in body.splitlines()),
            setup=[ln for ln in body.splitlines() if ln.startswith("a=setup")])
        if status != 201 or not location:
            self.fail(message=f"POST {self.endpoint}: {status} {body[:200]}")
            return False
        self.resource = urllib.parse.urljoin(self.endpoint, location)
        ok, msg = GstSdp.SDPMessage.new_from_text(body)
        if ok != GstSdp.SDPResult.OK:
            self.fail(message="unparsable SDP answer")
            return False
        answer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, msg)
        self.pc.emit("set-remote-description", answer, None)
        GLib.timeout_add(int(self.seconds * 1000), self.delete)
        return False

    def on_ice_state(self, pc, _param) -> None:  # noqa: ANN001
        state = pc.get_property("ice-connection-state")
        say(step="ice", state=state.value_nick)

    def delete(self) -> bool:
        status, _, _ = http("DELETE", self.resource, None, self.token)
        say(step="deleted", status=status)
        self.pipe.set_state(Gst.State.NULL)
        self.loop.quit()
        return False

    def run(self) -> int:
        self.pipe.set_state(Gst.State.PLAYING)
        GLib.timeout_add(int((self.seconds + 20) * 1000), lambda: self.fail(message="timed out") or False)
        self.loop.run()
        self.pipe.set_state(Gst.State.NULL)
        return self.rc


def main(argv: list[str]) -> int:
    Gst.init(None)
    if Gst.ElementFactory.find("webrtcbin") is None:
        say(step="error", message="no webrtcbin: apt-get install gstreamer1.0-plugins-bad gstreamer1.0-nice")
        return 1
    endpoint, wav, seconds = argv[1], argv[2], float(argv[3])
    return WhipClient(endpoint, wav, seconds, argv[4] if len(argv) > 4 else None).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
