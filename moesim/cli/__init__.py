"""The ``moesim`` command line. Each subcommand lives in its own module with ``register``."""
from __future__ import annotations

import argparse
import importlib
import sys

from moesim.config.errors import ConfigError

#: Subcommand modules under moesim.cli, in help order.
COMMANDS = ("predict", "listing", "run", "compare", "report", "calibrate", "measure", "trace",
            "place", "offload")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moesim", description="Predict and measure Mixture-of-Experts layer performance.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:  # a missing module is an ImportError: every subcommand must exist
        importlib.import_module(f"moesim.cli.{name}").register(sub)
    return parser


def _version() -> str:
    from moesim import __version__

    return f"moesim {__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"moesim: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("moesim: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
