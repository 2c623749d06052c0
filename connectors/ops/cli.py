"""The `waxlake` console script: `status`, `move-marker`, `lab`."""

from __future__ import annotations

import argparse
import sys

from connectors.ops import move_marker as markers
from connectors.ops import status
from connectors.ops.command import CommandError
from connectors.ops.lab import command as lab


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `waxlake` console script; returns the exit code."""
    parser = argparse.ArgumentParser(prog="waxlake", description="waxlake tools")
    commands = parser.add_subparsers(dest="command", required=True)
    status.add_parser(commands)
    markers.add_parser(commands)
    lab.add_parser(commands)
    args = parser.parse_args(argv)
    run = {"status": status.run, "move-marker": markers.run, "lab": lab.run}[args.command]
    try:
        return run(args)
    except CommandError as exc:
        print(f"waxlake: error: {exc}", file=sys.stderr)
        return exc.code


if __name__ == "__main__":
    sys.exit(main())
