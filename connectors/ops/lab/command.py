"""`waxlake lab`: for each guarantee, the same workload and the same seeded faults against a
broker (one it starts itself, or `--bootstrap-servers`), then the counts side by side.

stdout gets the results (the table, or JSON with `--json` and no file); stderr one line per
phase and fault while it runs. Exit 0 when every guarantee kept its promise, 1 when one did not
(or a run failed), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from connectors.local_broker import BrokerStartError, BrokerUnavailable, LocalBroker, start_broker
from connectors.ops.command import CommandError
from connectors.ops.lab import faults, plot, report
from connectors.ops.lab.runner import LabSettings, run_guarantee
from connectors.ops.lab.workload import Workload

GUARANTEES = ("exactly-once", "at-least-once", "at-most-once")
SECONDS_PER_FAULT = 5.0  # start-up, a first commit and the delay: what one fault cycle takes
BROKER_TIMEOUT_S = 15.0


class _Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module doc as written, and each option's default (where it has one)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def add_parser(commands: Any) -> None:
    p = commands.add_parser(
        "lab",
        help="the three guarantees under the same faults, measured side by side",
        description=__doc__,
        formatter_class=_Help,
    )
    p.add_argument("--bootstrap-servers", help="an existing broker (default: start one)")
    p.add_argument(
        "--broker",
        choices=("tansu", "kafka"),
        default="tansu",
        help="the local broker to start when no --bootstrap-servers",
    )
    p.add_argument("--records", type=int, default=200_000, help="records per guarantee")
    p.add_argument("--size", type=int, default=200, help="value bytes per record")
    p.add_argument("--partitions", type=int, default=4, help="partitions of each topic")
    p.add_argument(
        "--rate",
        type=int,
        default=0,
        help="records/s produced while the job runs (0: spread over the faults, "
        f"{SECONDS_PER_FAULT:g} s each, at least 10 s)",
    )
    p.add_argument("--kills", type=int, default=5, help="faults per guarantee")
    p.add_argument(
        "--faults",
        default="sigkill",
        help=f"comma-separated, taken in turn: {', '.join(faults.KINDS)}",
    )
    p.add_argument(
        "--max-delay",
        type=float,
        default=2.0,
        help="each fault strikes a seeded random 0..this many s after a commit",
    )
    p.add_argument(
        "--seed", type=int, default=None, help="seed of the fault schedule (none: from the clock)"
    )
    p.add_argument(
        "--guarantees", default=",".join(GUARANTEES), help="comma-separated, run in this order"
    )
    p.add_argument("--epoch", type=int, default=1, help="the job's -s (epoch, commit interval)")
    p.add_argument(
        "--batch-rows",
        type=int,
        default=2000,
        help="WAXLAKE_MAX_BATCH_ROWS: commits within an epoch at this many rows",
    )
    p.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="PATH",
        help="write the results as JSON to PATH (no PATH: to stdout, no table)",
    )
    p.add_argument("--plot", metavar="PNG", type=Path, help="draw the results to this picture")
    p.add_argument("--workdir", type=Path, help="keep tables and logs here (default: a temp dir)")


def _checked(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    if args.plot is not None:
        plot.require()
    for name in ("records", "size", "partitions", "batch_rows"):
        if getattr(args, name) <= 0:
            raise CommandError(f"--{name.replace('_', '-')} must be positive")
    workdir = args.workdir
    if (
        workdir is not None
        and workdir.exists()
        and (not workdir.is_dir() or any(workdir.iterdir()))
    ):
        raise CommandError(f"--workdir {args.workdir}: give a new or empty directory")
    for name in ("kills", "rate", "epoch", "max_delay"):
        if getattr(args, name) < 0:
            raise CommandError(f"--{name.replace('_', '-')} cannot be negative")
    kinds = [k.strip() for k in args.faults.split(",") if k.strip()] or ["sigkill"]
    guarantees = [g.strip() for g in args.guarantees.split(",") if g.strip()]
    wrong = [g for g in guarantees if g not in GUARANTEES]
    if wrong or not guarantees:
        raise CommandError(f"--guarantees: one or more of {', '.join(GUARANTEES)}")
    if len(set(guarantees)) != len(guarantees):
        raise CommandError("--guarantees: each at most once")
    if args.plot is not None and args.plot.suffix.lower() not in PICTURES:
        raise CommandError(f"--plot {args.plot}: a picture is .png, .svg or .pdf")
    for option, path in (("--plot", args.plot), ("--json", args.json)):
        if path is not None and path != "-":
            _check_writable(option, Path(path))
    unknown = faults.refusal([k for k in kinds if k != "broker-restart"], None)
    if unknown:
        raise CommandError(unknown)
    if "broker-restart" in kinds and (args.bootstrap_servers or args.broker != "kafka"):
        where = "--bootstrap-servers" if args.bootstrap_servers else f"--broker {args.broker}"
        raise CommandError(
            "--faults broker-restart needs a broker that keeps its log across a restart and that "
            f"the lab runs itself: --broker kafka (not {where}; Tansu keeps its log in memory)"
        )
    return kinds, guarantees


PICTURES = (".png", ".svg", ".pdf")


def _check_writable(option: str, path: Path) -> None:
    """The results are written after minutes of work: a place they cannot go is said first."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        raise CommandError(f"{option} {path}: cannot write there") from None
    if path.is_dir() or not os.access(path.parent, os.W_OK):
        raise CommandError(f"{option} {path}: cannot write there")


def _broker(args: argparse.Namespace, say: Callable[[str], None]) -> LocalBroker:
    say(f"starting a local {args.broker} broker")
    try:
        broker = start_broker(args.broker)
    except (BrokerUnavailable, BrokerStartError) as exc:
        raise CommandError(f"--broker {args.broker}: {str(exc).splitlines()[0]}") from None
    say(f"{broker.title} at {broker.bootstrap}")
    return broker


def _check_reachable(bootstrap: str) -> None:
    """A broker that does not answer is a usage error, not a traceback from the first topic."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    try:
        AdminClient({"bootstrap.servers": bootstrap, "log_level": 0}).list_topics(
            timeout=BROKER_TIMEOUT_S
        )
    except KafkaException as exc:
        raise CommandError(
            f"--bootstrap-servers {bootstrap}: no Kafka broker answered within "
            f"{BROKER_TIMEOUT_S:g} s ({exc.args[0].str()})"
        ) from None


def _say(prefix: str, started: float) -> Callable[[str], None]:
    def say(message: str) -> None:
        print(
            f"lab {time.monotonic() - started:6.1f}s {prefix}{message}", file=sys.stderr, flush=True
        )

    return say


def _stop_on_sigterm() -> None:
    """SIGTERM (and SIGHUP: its terminal closed) unwinds the lab, so its jobs are reaped and its
    broker stopped (they ran on, orphaned, when the lab was simply killed); exit code 128 + the
    signal's number, as for a process the signal ends."""

    def stop(signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        raise CommandError(
            f"stopped by {name} (its jobs and broker are stopped)", code=128 + signum
        )

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)


def run(args: argparse.Namespace) -> int:
    kinds, guarantees = _checked(args)
    _stop_on_sigterm()
    seed = args.seed if args.seed is not None else int(time.time()) % 100_000
    rate = args.rate or max(1, round(args.records / max(10.0, SECONDS_PER_FAULT * args.kills)))
    started = time.monotonic()
    say = _say("", started)
    if args.bootstrap_servers:
        _check_reachable(args.bootstrap_servers)
    broker = None if args.bootstrap_servers else _broker(args, say)
    bootstrap = args.bootstrap_servers or (broker.bootstrap if broker else "")
    scratch = None if args.workdir else tempfile.mkdtemp(prefix="waxlake-lab-")
    workdir = args.workdir or Path(str(scratch))
    try:
        if broker is not None and faults.refusal(kinds, broker):
            raise CommandError(str(faults.refusal(kinds, broker)))
        settings = LabSettings(
            Workload(args.records, args.size, args.partitions, rate),
            faults.schedule(args.kills, kinds, seed, args.max_delay),
            args.epoch,
            args.batch_rows,
        )
        shown = {
            "records": args.records,
            "size": args.size,
            "partitions": args.partitions,
            "rate": rate,
            "kills": args.kills,
            "faults": kinds,
            "max_delay_s": args.max_delay,
            "seed": seed,
            "epoch_s": args.epoch,
            "batch_rows": args.batch_rows,
            "broker": broker.title if broker else f"external {bootstrap}",
        }
        run_id = uuid.uuid4().hex[:8]
        rows = []
        for guarantee in guarantees:
            say(f"[{guarantee}] starting")
            done = run_guarantee(
                guarantee,
                bootstrap,
                broker,
                settings,
                workdir / guarantee,
                run_id,
                _say(f"[{guarantee}] ", started),
            )
            rows.append(report.result(done))
            r = rows[-1]
            say(f"[{guarantee}] done: {r['lost']:,} lost, {r['duplicated']:,} duplicated")
    finally:
        if broker is not None:
            broker.stop()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    heading = report.title(shown)
    document = {"settings": shown, "title": heading, "results": rows}
    if args.json == "-":
        json.dump(document, sys.stdout, indent=2)
        print()
    else:
        print(heading)
        print(report.table(rows))
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(document, indent=2) + "\n")
    if args.plot is not None:
        plot.draw(rows, heading, args.plot)
        say(f"picture written to {args.plot}")
    if args.workdir is not None:
        say(f"tables and job logs kept in {args.workdir}")
    return 0 if all(r["promise_kept"] for r in rows) else 1
