"""``python -m connectors.local_broker --kind kafka|tansu|noida [--port P] [--data-dir D]``

Starts one local broker and prints its bootstrap address as the FIRST line of stdout (flushed),
so a script can read it (``read -r BOOTSTRAP < <(python -m connectors.local_broker ...)``).
Runs until SIGTERM, SIGINT or SIGHUP (its terminal closed), then stops the broker and exits 0.
Exits 2 with one line on stderr for a port it cannot listen on, 1 if the broker cannot start
(e.g. no ``java``/``mvn`` for ``--kind kafka``), and 1 if the broker dies while running.
"""

from __future__ import annotations

import argparse
import errno
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from connectors.local_broker.launcher import KINDS, start_broker
from connectors.local_broker.process import BrokerStartError, BrokerUnavailable

PROG = "python -m connectors.local_broker"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[1])
    parser.add_argument("--kind", choices=KINDS, default="tansu", help="broker (default tansu)")
    parser.add_argument("--port", type=int, help="listen on 127.0.0.1:PORT (default: a free one)")
    parser.add_argument(
        "--data-dir", type=Path, help="noida only: keep its data here (default: a temp dir)"
    )
    parser.add_argument("--verbose", action="store_true", help="on failure, show the log tail")
    args = parser.parse_args(argv)
    if args.port is not None and (problem := _port_problem(args.port)):
        parser.error(f"--port {args.port} {problem}")
    if args.data_dir is not None and args.kind != "noida":
        parser.error(f"--data-dir is for --kind noida only ({args.kind} keeps no data)")
    return args


def _port_problem(port: int) -> str | None:
    """Why the broker could not listen on 127.0.0.1:`port`, found before it starts (a broker
    that cannot bind only says that in its log)."""
    if not 1 <= port <= 65535:
        return "must be from 1 to 65535"
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            what = "is in use" if exc.errno == errno.EADDRINUSE else "cannot be listened on"
            return f"{what} on 127.0.0.1 ({exc.strerror}): choose another, or leave it out"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Installed before the broker starts: a SIGTERM during a slow start still stops it cleanly.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    try:
        broker = start_broker(args.kind, args.port, args.data_dir)
    except (BrokerUnavailable, BrokerStartError) as exc:
        first, _, rest = str(exc).partition("\n")
        print(f"{PROG}: error: {first}", file=sys.stderr, flush=True)
        if args.verbose and rest:
            print(rest, file=sys.stderr, flush=True)
        return 1
    with broker:
        print(
            f"{PROG}: {broker.title} at {broker.bootstrap} (pid {broker.process.pid})",
            file=sys.stderr,
            flush=True,
        )
        print(broker.bootstrap, flush=True)  # last: whoever reads it may read stderr
        while not stop.wait(0.5):
            if broker.process.poll() is not None:
                print(
                    f"{PROG}: error: {broker.title} exited with code {broker.process.returncode}",
                    file=sys.stderr,
                    flush=True,
                )
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
