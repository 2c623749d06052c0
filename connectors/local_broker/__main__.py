"""``python -m connectors.local_broker --kind kafka|tansu|noida [--port P] [--data-dir D]``

Starts one local broker and prints its bootstrap address as the FIRST line of stdout (flushed),
so a script can read it (``read -r BOOTSTRAP < <(python -m connectors.local_broker ...)``).
Runs until SIGTERM or SIGINT, then stops the broker and exits 0. Exits 1 with one line on
stderr if the broker cannot start (e.g. no ``java``/``mvn`` for ``--kind kafka``), and 1 if
the broker dies while running.
"""

from __future__ import annotations

import argparse
import signal
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
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Installed before the broker starts: a SIGTERM during a slow start still stops it cleanly.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
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
