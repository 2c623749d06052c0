"""`waxlake lab`: a small real lab on the session broker keeps each guarantee's promise on its
exact counts, writes every JSON field and a picture; the counting itself is checked on tables
with known losses and duplicates; faults a broker cannot take are refused up front."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from deltalake import write_deltalake

from connectors.local_broker import free_port
from connectors.ops.cli import main
from connectors.ops.lab import command as lab_command
from connectors.ops.lab import counting, report
from connectors.ops.lab.workload import Acked

REPO = Path(__file__).resolve().parents[1]
GUARANTEES = ["exactly-once", "at-least-once", "at-most-once"]


@pytest.fixture(scope="module")
def lab(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One small lab: 20,000 records over 2 partitions, 2 faults aimed at both windows between
    the two writes (a mid-commit SIGKILL, then one right after the table commit)."""
    out = tmp_path_factory.mktemp("lab")
    paths = {"json": out / "lab.json", "png": out / "lab.png", "work": out / "work"}
    argv = [sys.executable, "-m", "connectors.ops.cli", "lab"]
    argv += ["--bootstrap-servers", kafka_bootstrap, "--records", "20000", "--kills", "2"]
    argv += [
        "--partitions",
        "2",
        "--seed",
        "7",
        "--faults",
        "sigkill-mid-commit,sigkill-after-commit",
    ]
    argv += [
        "--json",
        str(paths["json"]),
        "--plot",
        str(paths["png"]),
        "--workdir",
        str(paths["work"]),
    ]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=400)
    (out / "stderr.txt").write_text(done.stderr)
    assert paths["json"].exists(), f"exit {done.returncode}:\n{done.stderr[-3000:]}"
    assert done.returncode == 0, (
        f"a promise broken or a run failed:\n{done.stdout}\n{done.stderr[-3000:]}"
    )
    assert "exactly-once" in done.stdout and "promise" in done.stdout  # the terminal table
    return paths


def results(lab: dict[str, Path]) -> dict[str, dict[str, Any]]:
    document = json.loads(lab["json"].read_text())
    return {r["guarantee"]: r for r in document["results"]}


def test_each_guarantee_keeps_its_promise(lab):
    got = results(lab)
    assert sorted(got) == sorted(GUARANTEES)
    for name, r in got.items():
        assert r["produced"] == 20_000, (name, r["produce_errors"])
        assert r["unknown"] == 0, name
        assert r["drain_exit"] == 0, (name, r["notes"])
        # The counts add up: every acknowledged record is landed or lost, every extra row a copy.
        assert r["unique"] + r["lost"] == r["produced"], name
        assert r["rows"] == r["unique"] + r["duplicated"], name
    assert (got["exactly-once"]["lost"], got["exactly-once"]["duplicated"]) == (0, 0)
    assert got["at-least-once"]["lost"] == 0
    assert got["at-most-once"]["duplicated"] == 0


def test_json_has_every_field(lab):
    document = json.loads(lab["json"].read_text())
    assert {"settings", "title", "results"} <= set(document)
    settings = document["settings"]
    for key in ("records", "size", "partitions", "rate", "kills", "faults", "seed", "broker"):
        assert key in settings, key
    assert settings["seed"] == 7 and settings["kills"] == 2
    for r in document["results"]:
        assert tuple(r) == report.FIELDS
        assert len(r["faults"]) == 2
        assert r["commits"] > 0 and r["cpu_s"] > 0 and r["records_per_s"] > 0
        assert 0 < r["latency_ms_p50"] <= r["latency_ms_p99"] <= r["latency_ms_max"]
        assert len(r["processes"]) == 4 + r["restarts"]  # first, 2 restarts, drain (+ self-exits)


def test_picture_is_written(lab):
    data = lab["png"].read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 20_000  # four panels of bars and labels, not an empty canvas


def _table(uri: Path, rows: list[tuple[int, int]], produced_ms: int) -> None:
    stamps = pa.array([produced_ms] * len(rows), pa.timestamp("ms", "UTC"))
    data = pa.table(
        {
            "partition": pa.array([p for p, _ in rows], pa.int32()),
            "offset": pa.array([o for _, o in rows], pa.int64()),
            "timestamp": stamps,
        }
    )
    write_deltalake(str(uri), data, mode="append", partition_by=["partition"])


def test_counts_are_exact_on_known_tables(tmp_path):
    """Offsets 0-9 of partitions 0 and 1 acknowledged; the table lacks 0:3 and 1:7, holds 0:5
    three times and 1:2 twice, plus 2:0 that was never acknowledged; 1:7 is a dead letter."""
    acked = Acked()
    for p in (0, 1):
        for o in range(10):
            acked.partitions.append(p)
            acked.offsets.append(o)
    root = tmp_path / "lake"
    produced_ms = int(time.time() * 1000) - 500
    first = [(p, o) for p in (0, 1) for o in range(10) if (p, o) not in ((0, 3), (1, 7))]
    _table(root / "t", first, produced_ms)
    _table(root / "t", [(0, 5), (0, 5), (1, 2), (2, 0)], produced_ms)
    _table(root / "_dead_letters" / "t", [(1, 7)], produced_ms)

    found = counting.landed(root, "t")
    counts = counting.count(counting.acked_frame(acked), found.rows)
    assert (counts.produced, counts.lost, counts.duplicated, counts.unknown) == (20, 1, 3, 1)
    assert (counts.rows, counts.unique) == (23, 20)
    assert found.commits == 3  # two appends to the table, one to the dead letters
    assert counts.latencies_ms.size == 19  # each landed acknowledged record once
    assert (counts.latencies_ms >= 400).all() and (counts.latencies_ms < 60_000).all()
    assert isinstance(found.rows, pl.DataFrame)


def test_broker_restart_is_refused_on_tansu(capsys):
    code = main(["lab", "--broker", "tansu", "--faults", "sigkill,broker-restart"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("waxlake: error: --faults broker-restart")
    assert "memory" in err[0]


def test_plot_without_matplotlib_fails_in_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    code = main(["lab", "--broker", "tansu", "--plot", str(tmp_path / "x.png")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [
        "waxlake: error: --plot needs matplotlib, which is not installed: install waxlake's lab "
        "extra (pip install -e '.[lab]' from a clone)"
    ]
    assert not (tmp_path / "x.png").exists()


def test_a_broker_that_does_not_answer_is_one_line(capsys, monkeypatch):
    monkeypatch.setattr(lab_command, "BROKER_TIMEOUT_S", 2.0)
    where = f"127.0.0.1:{free_port()}"
    code = main(["lab", "--bootstrap-servers", where, "--records", "100", "--kills", "0"])
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.strip()]
    assert code == 2
    assert err[-1].startswith(f"waxlake: error: --bootstrap-servers {where}: no Kafka broker")
    assert "Traceback" not in "\n".join(err)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--batch-rows", "0", "--batch-rows must be positive"),  # it ran, then 'BROKEN'
        ("--max-delay", "-1", "--max-delay cannot be negative"),  # a traceback mid-run
        ("--epoch", "-1", "--epoch cannot be negative"),
        # These failed after the whole run, with a traceback:
        ("--guarantees", "exactly-once,exactly-once", "--guarantees: each at most once"),
        ("--plot", "/proc/no-such/lab.png", "--plot /proc/no-such/lab.png: cannot write there"),
        ("--json", "/proc/no-such/lab.json", "--json /proc/no-such/lab.json: cannot write there"),
        ("--plot", "lab.txt", "--plot lab.txt: a picture is .png, .svg or .pdf"),
    ],
)
def test_bad_options_are_one_line_before_anything_runs(option, value, message, capsys):
    code = main(["lab", "--broker", "tansu", option, value])
    err = capsys.readouterr().err.strip().splitlines()
    assert (code, err) == (2, [f"waxlake: error: {message}"])


def test_a_workdir_that_is_a_file_is_one_line(capsys, tmp_path):
    (tmp_path / "file").write_text("")
    code = main(["lab", "--broker", "tansu", "--workdir", str(tmp_path / "file")])
    err = capsys.readouterr().err.strip().splitlines()
    assert (code, err) == (
        2,
        [f"waxlake: error: --workdir {tmp_path / 'file'}: give a new or empty directory"],
    )


@pytest.mark.parametrize(
    ("stop", "code", "name"), [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGHUP, 129, "SIGHUP")]
)
def test_sigterm_stops_the_lab_with_its_jobs_and_broker(stop, code, name, tmp_path):
    """They ran on, orphaned (an unbounded job and a broker), when the lab was terminated (or
    its terminal closed: SIGHUP)."""
    work = tmp_path / "work"
    argv = [sys.executable, "-m", "connectors.ops.cli", "lab", "--broker", "tansu"]
    argv += ["--records", "200000", "--kills", "3", "--workdir", str(work)]
    log = tmp_path / "lab.log"
    with log.open("w") as out:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while "job started, producing" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.2)
        assert "job started, producing" in log.read_text(), log.read_text()
        proc.send_signal(stop)
        ended = proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert ended == code, log.read_text()[-3000:]
    assert log.read_text().strip().splitlines()[-1].startswith(f"waxlake: error: stopped by {name}")
    assert _processes_mentioning(str(work)) == []
    broker = log.read_text().split(" at 127.0.0.1:", 1)[1].split()[0]
    assert _processes_mentioning(f"127.0.0.1:{broker}") == []


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in words:
            found.append(words)
    return found
