"""The `shopstream` console script: one sub-command per module, loaded on demand.

Each command module exposes ``register(subparsers)`` (adds its parser, sets ``func``).
Loading on demand keeps `shopstream rankings` from importing Beam or XGBoost.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Optional, Sequence

#: command name → module that registers it (and the one-line help shown in `--help`).
COMMANDS = {
    "generate": ("pipelines.generate", "write a synthetic data set in the Fashion Campus CSV format"),
    "replay": ("pipelines.streaming", "run the streaming pipeline over historical files"),
    "stream": ("pipelines.streaming", "run the streaming pipeline live from Pub/Sub"),
    "publish": ("pipelines.publish", "replay files into Pub/Sub in event-time order"),
    "batch": ("pipelines.batch", "the daily batch job: sales facts, daily sales, churn"),
    "train": ("pipelines.train", "train the popularity or churn model"),
    "predict": ("pipelines.train", "score customers with the current churn model"),
    "rankings": ("pipelines.rankings", "read the live top-10 rankings from Redis"),
    "serve": ("pipelines.serve", "serve the rankings HTTP API and live page"),
    "report": ("pipelines.report", "write the self-contained HTML analytics report"),
}


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shopstream", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="WARNING", help="Python logging level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = next((a for a in argv if a in COMMANDS), None)
    for name, (module, summary) in COMMANDS.items():
        if wanted is not None and name != wanted:
            sub.add_parser(name, help=summary)
            continue
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:  # a command whose module is not installed
            p = sub.add_parser(name, help=f"{summary} (unavailable: {exc})")
            p.set_defaults(func=lambda _a, _e=exc: _unavailable(_e))
            continue
        mod.register(sub, name) if _takes_name(mod.register) else mod.register(sub)
    return parser


def _takes_name(fn) -> bool:
    return fn.__code__.co_argcount >= 2


def _unavailable(exc: Exception) -> int:
    print(f"shopstream: this command is unavailable: {exc}", file=sys.stderr)
    return 2


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args, extra = parser.parse_known_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if extra and not getattr(args, "accepts_beam_args", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.beam_args = extra
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as exc:  # bad arguments or inputs: a message, not a traceback
        if args.log_level.upper() == "DEBUG":
            raise
        print(f"shopstream {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
