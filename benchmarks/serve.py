"""``python -m benchmarks.serve [--scheduler batched|naive] SERVE_OPTIONS``: ``lipstream serve``
with a choice of frame loop, for the concurrency benchmark.  ``naive`` is the baseline in
``benchmarks/naive_loop.py``; the product itself only serves the batched loop."""

from __future__ import annotations

import argparse
import logging
import sys

from realtime.cli import build_parser, serve_config
from realtime.server import run_server


def naive_frame_loop(engine, clock, metrics, config):  # noqa: ANN001, ANN201 - ServerConfig.frame_loop
    from benchmarks.naive_loop import NaiveFrameLoop

    return NaiveFrameLoop(engine, clock, metrics, max_lag=config.max_lag_frames, idle_motion=config.idle_motion)


def main(argv: list[str] | None = None) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--scheduler", default="batched", choices=("batched", "naive"))
    known, rest = pre.parse_known_args(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(["serve", *rest])
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = serve_config(args)
    if known.scheduler == "naive":
        config.frame_loop = naive_frame_loop
    run_server(config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
