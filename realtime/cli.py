"""``lipstream``: the command line.  Each subcommand is a thin shell over one module."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from engines.manifest import DEFAULT_MODEL_DIR

log = logging.getLogger("lipstream")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR,
                   help="model artifact directory (manifest.json + ONNX); default: the built-in model")
    from engines.factory import BACKENDS  # torch-free

    p.add_argument("--engine", default="auto", choices=BACKENDS,
                   help="inference backend: tensorrt (a plan built by `lipstream build-engine`), torch "
                        "(FP16 + CUDA graphs on a GPU, FP32 on CPU), onnxruntime (CPU); auto picks the "
                        "fastest one this machine can run and logs which (default: auto)")


def _add_avatar_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--avatar", default="default",
                   help="avatar name (prepared with `lipstream prepare`) or an avatar directory; "
                        "'default' is the built-in astronaut portrait, prepared on first use")
    p.add_argument("--avatars-dir", type=Path, default=None,
                   help="where prepared avatars live (default: $LIPSTREAM_HOME/avatars or ~/.cache/lipstream/avatars)")


def _add_access_args(p: argparse.ArgumentParser) -> None:
    """serve's access and upload options (docs/security.md)."""
    p.add_argument("--token", default=None,
                   help="bearer token every API route, /offer, WebSocket and /metrics then needs "
                        "(default: $LIPSTREAM_TOKEN, else none; docs/security.md)")
    p.add_argument("--cors-origin", default=None, metavar="ORIGIN",
                   help="let pages of this one origin (e.g. https://app.example.org) call the API "
                        "(default: no cross-origin access)")
    p.add_argument("--max-upload-mb", type=float, default=32.0,
                   help="largest avatar file POST /api/avatars takes (default: 32)")
    p.add_argument("--max-upload-video-s", type=float, default=10.0,
                   help="longest avatar video it prepares (default: 10)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lipstream",
        description="Real-time streaming avatar: speech in, a lip-synced 25 fps talking head out.",
        epilog="Run `lipstream COMMAND --help` for a command's options.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_render_command(sub)
    _add_prepare_command(sub)
    _add_export_command(sub)
    _add_build_engine_command(sub)
    _add_bench_command(sub)
    _add_serve_command(sub)
    _add_kiosk_command(sub)
    _add_train_commands(sub)
    return parser


def _add_render_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("render", help="render a speech file to a lip-synced MP4",
                       description="Render SPEECH to an H.264 MP4 at 25 fps with the speech muxed in, "
                                   "through the same windows, engine and compositor as the server.")
    p.add_argument("--audio", type=Path, required=True, help="speech file (WAV, MP3, ... any rate/channels)")
    p.add_argument("--out", type=Path, required=True, help="output .mp4 path")
    p.add_argument("--batch", type=int, default=8, help="frames per engine call (default: 8)")
    p.add_argument("--no-idle-motion", action="store_true",
                   help="keep a still-image avatar perfectly still (as `serve --no-idle-motion`)")
    _add_avatar_args(p)
    _add_model_args(p)


def _add_prepare_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="prepare an avatar from a portrait image or a video",
                       description="Detect the face, choose a stable mouth crop, and cache every "
                                   "audio-independent feature of the avatar ahead of time.")
    p.add_argument("source", type=Path, help="portrait image (PNG/JPG) or video (MP4, ...) with one face")
    p.add_argument("--name", required=True, help="avatar name to use with --avatar")
    p.add_argument("--avatars-dir", type=Path, default=None, help="where to store it (default: see render --help)")
    p.add_argument("--max-frames", type=int, default=250, help="video: frames to keep (default: 250 = 10 s)")
    p.add_argument("--crop-size", type=int, default=128,
                   help="side of the mouth crop, px; must equal the model's (the built-in model: 128)")
    p.add_argument("--model", type=Path, default=None,
                   help="prepare the avatar for this model directory (e.g. one made by `lipstream export "
                        "--from wav2lip`): an image generator caches its own face features; default: the built-in model")


def _add_export_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export the built-in generator, or convert your Wav2Lip checkpoint or a G4G "
                       "run (--from), to ONNX + manifest; needs the [export] extra",
                       description="Export the built-in audio net + renderer as one ONNX graph (opset 17, "
                                   "dynamic batch), or convert a Wav2Lip-family checkpoint you own or a G4G run "
                                   "trained by `lipstream train` with --from (docs/engines.md, docs/g4g.md); "
                                   "check it against torch and write a model artifact.")
    from export.export_args import add_export_arguments  # torch-free

    add_export_arguments(p)


def _add_build_engine_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build-engine", help="build a TensorRT engine from an exported ONNX (needs TensorRT + GPU)",
                       description="Build an FP16/FP32 TensorRT engine for this GPU from a model artifact's "
                                   "ONNX and cache it, so `serve --engine tensorrt` (or auto) loads it "
                                   "instead of building at start-up. Exits 3 if TensorRT or a GPU is missing.")
    from export.trt_build import add_build_engine_arguments  # torch-free, TensorRT imported on use

    add_build_engine_arguments(p)


def _add_bench_command(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("bench", add_help=False, help="run the benchmark suite (`lipstream bench --help`); "
                   "needs the [bench] extra")


def _add_serve_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the avatar over WebRTC (HTTP signalling, metrics)",
                       description="Stream the avatar live: POST /offer for a WebRTC session (send a mic "
                                   "track, or none and push speech to /api/sessions/ID/speak), "
                                   "GET /metrics for Prometheus, GET / for the browser client.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="TCP port (default: 8080)")
    p.add_argument("--max-sessions", type=int, default=8, help="concurrent sessions before 503 (default: 8)")
    p.add_argument("--codec", default="vp8", choices=("vp8", "h264"), help="video codec (default: vp8)")
    p.add_argument("--max-lag-frames", type=int, default=2, choices=(1, 2, 3),
                   help="frames a session may fall behind before skipping ahead: 2 = no repeated frames "
                        "under normal mic jitter; 1 = ~10 ms lower latency but 7-16%% of frame slots repeat "
                        "(default: 2; docs/benchmarks.md)")
    p.add_argument("--render-when", default="tick", choices=("tick", "window"),
                   help="tick = render every session's frame on the shared 25 fps tick (default); window = also "
                        "render as soon as mic audio completes a frame's window, which removes the wait for "
                        "the next tick from mic-to-mouth (docs/benchmarks.md)")
    p.add_argument("--mic-ptime", type=int, default=20, choices=(10, 20),
                   help="Opus packet time the server's answer asks the browser's mic for: 10 = the mic's speech "
                        "reaches the server ~10 ms sooner, for twice the packets to receive (default: 20; "
                        "docs/benchmarks.md)")
    p.add_argument("--no-idle-motion", action="store_true",
                   help="keep a still-image avatar perfectly still in silence")
    p.add_argument("--stun", action="append", default=[], metavar="URL",
                   help="STUN server for clients beyond this machine, e.g. stun:stun.example.org:3478 "
                        "(repeatable; default: none, and a loopback server offers loopback ICE candidates only)")
    p.add_argument("--session-timeout", type=float, default=15.0, metavar="SECONDS",
                   help="close a microphone session whose peer has sent no audio for this long (a client that "
                        "froze or lost its network without hanging up); sessions without a mic are not reaped "
                        "for silence (ICE consent failure ends those, ~30 s); 0 = never (default: 15)")
    _add_access_args(p)
    _add_avatar_args(p)
    _add_model_args(p)


def _add_kiosk_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("kiosk", help="the avatar full screen here, a local microphone and speaker",
                       description="Show the avatar full screen on this machine (Esc or q quits), driven by the "
                                   "local microphone, or by audio files (--play) or speech pushed over HTTP "
                                   "(--http); the speech comes out of the speaker in step with the lips. "
                                   "docs/kiosk.md")
    p.add_argument("--input", metavar="DEVICE", default=None,
                   help="microphone: a device index or (part of) its name, 'none' for no mic (default: the system's)")
    p.add_argument("--output", metavar="DEVICE", default=None,
                   help="speaker: a device index or (part of) its name, 'none' to stay silent (default: the system's)")
    p.add_argument("--list-devices", action="store_true", help="list the audio devices and exit")
    p.add_argument("--play", action="append", type=Path, metavar="FILE_OR_DIR",
                   help="speak these audio files (a folder: its files by name), in order; repeatable")
    p.add_argument("--loop", action="store_true", help="repeat the --play playlist")
    p.add_argument("--http", type=int, metavar="PORT", default=None,
                   help="accept speech over HTTP: POST /speak (an audio file), POST /interrupt, GET /status")
    p.add_argument("--http-host", default="127.0.0.1", help="address for --http (default: 127.0.0.1)")
    p.add_argument("--barge-in", action="store_true",
                   help="speech on the microphone interrupts playback (with --play or --http)")
    p.add_argument("--windowed", action="store_true", help="a window instead of full screen")
    p.add_argument("--scale", type=float, default=1.0, help="window scale with --windowed (default: 1)")
    p.add_argument("--exit-when-done", action="store_true",
                   help="exit once the --play playlist has been spoken (not with --http)")
    p.add_argument("--status-file", type=Path, default=None,
                   help="keep a JSON status here (frames shown, A/V skew, devices, mouth box on screen)")
    p.add_argument("--reconnect-s", type=float, default=10.0,
                   help="how long to retry a device that disappeared before exiting (default: 10)")
    p.add_argument("--output-latency-ms", type=float, default=100.0,
                   help="speaker latency asked of PortAudio; lower suits a dedicated sound card (default: 100)")
    p.add_argument("--max-lag-frames", type=int, default=2, choices=(1, 2, 3),
                   help="frames the avatar may fall behind before skipping ahead (default: 2, as serve)")
    p.add_argument("--no-idle-motion", action="store_true", help="no blinks, breathing or head motion")
    _add_avatar_args(p)
    _add_model_args(p)

def _add_train_commands(sub: argparse._SubParsersAction) -> None:
    from export.g4g.train_args import add_train_arguments, add_train_sync_arguments  # torch-free

    p = sub.add_parser("train", help="train the G4G generator on a folder of talking videos (needs the [export] extra)",
                       description="Train the G4G generator (arXiv 2402.18122) on your talking videos: prepare and "
                                   "cache face crops, landmark priors and mel windows, split by speaker, optimise the "
                                   "paper's losses, validate against copying a reference frame, write resumable "
                                   "OUT/checkpoint.pt, OUT/log.jsonl and OUT/samples/*.png. Then `lipstream export "
                                   "--from g4g OUT/checkpoint.pt --out MODEL_DIR` (docs/g4g-training.md).")
    add_train_arguments(p)
    p = sub.add_parser("train-sync", help="train the G4G lip-sync expert used by `train --sync` (needs [export])",
                       description="Train a SyncNet-style lip-sync expert on the same talking videos (five mouth "
                                   "crops + the mel window, in-sync vs shifted pairs); `lipstream train --sync "
                                   "OUT/checkpoint.pt` uses it for the sync loss and score (docs/g4g-training.md).")
    add_train_sync_arguments(p)


def _avatars_dir(arg: Path | None) -> Path:
    from engines.avatar import default_avatars_dir

    return arg if arg is not None else default_avatars_dir()


def cmd_render(args: argparse.Namespace) -> int:
    from engines.factory import create_engine
    from realtime.avatars import load_for_model
    from realtime.progress import ProgressLine
    from realtime.render import render

    engine = create_engine(args.engine, args.model)
    avatar = load_for_model(args.avatar, args.avatars_dir, engine.manifest.features_version, engine.model_dir)
    stats = render(args.audio, avatar, engine, args.out, batch=args.batch,
                   progress=ProgressLine("rendering"), idle_motion=not args.no_idle_motion)
    print(f"wrote {args.out}: {stats.frames} frames, {stats.audio_s:.2f} s of speech in "
          f"{stats.wall_s:.2f} s ({stats.speed:.1f}x real time, engine {engine.name})")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from export.avatar import prepare_avatar
    from realtime.progress import ProgressLine

    path = prepare_avatar(args.source, args.name, _avatars_dir(args.avatars_dir), crop_size=args.crop_size,
                          max_frames=args.max_frames, progress=ProgressLine("preparing"), model_dir=args.model)
    print(f"prepared avatar {args.name!r} in {path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    try:
        from export.onnx_export import run
    except ImportError as exc:
        return _missing_extra("export needs torch and onnx", exc, "pip install torch==2.13.0 'lipstream[export]'")
    return run(args)


def _train_command(args: argparse.Namespace, sync: bool) -> int:
    """`lipstream train` / `train-sync`: torch is imported here, and a bad input exits 2 with the fix."""
    try:
        if sync:
            from export.g4g.train_sync import run_sync as run
        else:
            from export.g4g.train import run_train as run
    except ImportError as exc:
        return _missing_extra("training needs torch", exc, "pip install torch==2.13.0 'lipstream[export]'")
    from export.g4g.data import DataError
    from realtime.progress import ProgressLine

    if args.steps < 1 or args.batch < 1 or args.val_every < 1:
        print("error: --steps, --batch and --val-every must be at least 1", file=sys.stderr)
        return 2
    try:
        kwargs = {"progress": ProgressLine("preparing data", "clips")} if sync else \
            {"data_progress": ProgressLine("preparing data", "clips"), "step_progress": ProgressLine("training", "steps")}
        figures = run(args, **kwargs)
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out / 'checkpoint.pt'} at step {figures['step']}: "
          + ", ".join(f"{k} {v:.4g}" for k, v in figures.items() if k != "step" and isinstance(v, float)))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    return _train_command(args, sync=False)


def cmd_train_sync(args: argparse.Namespace) -> int:
    return _train_command(args, sync=True)


def cmd_bench(argv: list[str]) -> int:
    """The suite runs as its own program: the serving package imports nothing from benchmarks/."""
    import importlib.util
    import subprocess

    if importlib.util.find_spec("benchmarks.suite") is None:
        print("error: the benchmarks are not installed (run from a lipstream checkout)", file=sys.stderr)
        return 2
    return subprocess.call([sys.executable, "-m", "benchmarks.suite", *argv])


def _missing_extra(what: str, exc: ImportError, fix: str) -> int:
    print(f"error: {what} ({exc.name} is missing): {fix}", file=sys.stderr)
    return 2


def cmd_build_engine(args: argparse.Namespace) -> int:
    from export.trt_build import run

    return run(args)


def serve_config(args: argparse.Namespace):  # noqa: ANN201 - realtime.server.ServerConfig
    """The server's configuration from `lipstream serve`'s options."""
    from realtime.server import ServerConfig

    return ServerConfig(host=args.host, port=args.port, avatar=args.avatar, avatars_dir=args.avatars_dir,
                        engine=args.engine, model_dir=args.model, max_sessions=args.max_sessions,
                        codec=args.codec, idle_motion=not args.no_idle_motion,
                        max_lag_frames=args.max_lag_frames, stun=tuple(args.stun), render_when=args.render_when,
                        mic_ptime_ms=args.mic_ptime,
                        token=args.token or os.environ.get("LIPSTREAM_TOKEN") or None,
                        cors_origin=args.cors_origin, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
                        max_upload_video_s=args.max_upload_video_s, session_timeout_s=args.session_timeout)


def cmd_serve(args: argparse.Namespace) -> int:
    from realtime.server import run_server

    if args.max_sessions < 1:
        print("error: --max-sessions must be at least 1", file=sys.stderr)
        return 2
    if not args.session_timeout >= 0:
        print("error: --session-timeout must be 0 (never) or a number of seconds, e.g. 15", file=sys.stderr)
        return 2
    run_server(serve_config(args))
    return 0


def cmd_kiosk(args: argparse.Namespace) -> int:
    from realtime.kiosk.command import config_from_args, list_devices_command, run_kiosk

    if args.list_devices:
        return list_devices_command()
    return run_kiosk(config_from_args(args))


COMMANDS = {"render": cmd_render, "prepare": cmd_prepare, "export": cmd_export,
            "build-engine": cmd_build_engine, "serve": cmd_serve,
            "kiosk": cmd_kiosk, "train": cmd_train, "train-sync": cmd_train_sync}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # its own parser: the suite forwards options to each benchmark
        return cmd_bench(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from engines.manifest import ModelArtifactError
    from realtime.audio_io import AudioFormatError
    from engines.audio_convention import UnsupportedConvention
    from engines.avatar import AvatarError

    try:
        return COMMANDS[args.command](args)
    except (AvatarError, AudioFormatError, ModelArtifactError, UnsupportedConvention, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
