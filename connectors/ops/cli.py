"""The `waxlake` console script: `status`, `move-marker`, `lab`."""

from __future__ import annotations

import argparse
import os
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


def entry() -> None:
    """The console script: `main`, then leave at once. Rust and C++ libraries (delta-rs,
    librdkafka, Arrow) tear down their threads at interpreter exit, and one of them now and then
    aborts there (`terminate called without an active exception`), which would turn a clean
    exit code into SIGABRT; everything was flushed and committed by then."""
    try:
        try:
            code = main()
        except SystemExit as exc:  # argparse: --help, a usage error
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        sys.stdout.flush()
    except BrokenPipeError:  # `waxlake status | head`: the reader has all it wanted
        os._exit(141)  # as a shell reports a command ended by SIGPIPE
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
