"""`waxlake status` against a real broker and a table the real job wrote."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

from connectors.delta.markers import app_id
from connectors.local_broker import free_port
from tests.broker_ops import delete_records, recreate_topic
from tests.jobs import REPO, job_env, run_job
from tests.producing import produce, producer, simple_items

WAXLAKE_SCRIPT = Path(sys.executable).parent / "waxlake"


def status_env(**extra: str) -> dict[str, str]:
    """No inherited waxlake or Kafka settings: each test says what the command sees."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("WAXLAKE_", "BYTEWAX_")) and k != "KAFKA_BOOTSTRAP_SERVERS"
    }
    return {**env, "PYTHONPATH": str(REPO), **extra}


def status(
    *args: str, cwd: Path, env: dict[str, str] | None = None, script: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run `waxlake status ...` (the console script if `script`, else `python -m`)."""
    head = [str(WAXLAKE_SCRIPT)] if script else [sys.executable, "-m", "connectors.ops.cli"]
    return subprocess.run(
        [*head, "status", *args],
        cwd=cwd,
        env=env or status_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def produce_late(bootstrap: str, topic: str, partition: int, count: int, kind: str) -> None:
    """`count` records in one batch; on Tansu one per batch, since its high watermark (last
    batch's base offset + 1) is only exact then. Real Kafka's is exact either way."""
    prod = producer(bootstrap)
    for i in range(count):
        prod.produce(topic, value=f"late-{partition}-{i}".encode(), partition=partition)
        if kind == "tansu":
            assert prod.flush(30) == 0
    assert prod.flush(30) == 0


def partitions(doc: dict[str, Any]) -> list[tuple[int, int | None, int | None, int | None]]:
    (table,) = doc["tables"]
    return [
        (p["partition"], p["committed_offset"], p["end_offset"], p["lag"])
        for p in table["partitions"]
    ]


def test_status_reports_table_offsets_and_lag(
    kafka_bootstrap, broker_kind, topic_factory, tmp_path
):
    topic = topic_factory(3)
    produce(kafka_bootstrap, simple_items(topic, 2, 200))  # partitions 0 and 1, offsets 0..99
    for partition in (0, 1):
        produce_late(kafka_bootstrap, topic, partition, 1, broker_kind)  # offset 100
    root = tmp_path / "lake"
    job = run_job(job_env(kafka_bootstrap, [topic], root), root / "_recovery")
    assert job.returncode == 0, job.stderr[-3000:]
    table = DeltaTable(str(root / topic))
    assert table.transaction_version(app_id(topic, 0)) == 100
    assert table.transaction_version(app_id(topic, 1)) == 100
    assert table.transaction_version(app_id(topic, 2)) is None

    # After the run: 3 more on partition 0, 2 on the never-written partition 2.
    produce_late(kafka_bootstrap, topic, 0, 3, broker_kind)
    produce_late(kafka_bootstrap, topic, 2, 2, broker_kind)

    common = ["--root", str(root), "--bootstrap-servers", kafka_bootstrap, "--topics", topic]
    result = status(*common, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["root"] == str(root)
    (got,) = doc["tables"]
    assert got["topic"] == topic
    assert got["uri"] == f"{root}/{topic}"
    assert got["version"] == table.version()
    assert got["rows"] == 202
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", got["last_commit"])
    assert got["dead_letters"] == 0
    assert partitions(doc) == [(0, 100, 104, 3), (1, 100, 101, 0), (2, None, 2, 2)]

    if WAXLAKE_SCRIPT.exists():  # `pip install -e .` puts the console script next to python
        scripted = status(*common, "--json", cwd=tmp_path, script=True)
        assert scripted.returncode == 0, scripted.stderr
        assert json.loads(scripted.stdout) == doc

    human = status(*common, cwd=tmp_path)
    assert human.returncode == 0, human.stderr
    assert f"{topic}  version {table.version()}  rows 202  dead letters 0" in human.stdout
    assert re.search(r"^\s+partition\s+committed\s+end\s+lag$", human.stdout, re.M)
    for line in (r"0\s+100\s+104\s+3", r"1\s+100\s+101\s+0", r"2\s+-\s+2\s+2"):
        assert re.search(rf"^\s+{line}$", human.stdout, re.M), human.stdout

    # Settings from the environment; topics discovered (`_recovery`, `_dead_letters` skipped).
    write_deltalake(str(root / "_dead_letters" / topic), pa.table({"offset": [5, 7]}))
    env = status_env(WAXLAKE_TABLE_ROOT=str(root), KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap)
    discovered = status("--json", cwd=tmp_path, env=env)
    assert discovered.returncode == 0, discovered.stderr
    doc = json.loads(discovered.stdout)
    assert [t["topic"] for t in doc["tables"]] == [topic]
    assert doc["tables"][0]["dead_letters"] == 2
    assert partitions(doc) == [(0, 100, 104, 3), (1, 100, 101, 0), (2, None, 2, 2)]


def test_missing_table_and_dead_broker(kafka_bootstrap, topic_factory, tmp_path):
    topic = topic_factory(2)
    produce(kafka_bootstrap, simple_items(topic, 2, 10))
    root = tmp_path / "lake"
    assert run_job(job_env(kafka_bootstrap, [topic], root), None).returncode == 0

    missing = status("--root", str(root), "--topics", "no-such-topic", cwd=tmp_path)
    assert missing.returncode == 1
    assert missing.stdout == ""
    assert f"no Delta table for topic no-such-topic at {root}/no-such-topic" in missing.stderr

    dead = ["--root", str(root), "--bootstrap-servers", f"127.0.0.1:{free_port()}"]
    dead += ["--topics", topic, "--timeout", "2"]
    result = status(*dead, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "did not answer within 2 s" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr  # one line, no log spam
    doc = json.loads(result.stdout)
    assert doc["tables"][0]["rows"] == 10
    assert partitions(doc) == [(0, 4, None, None), (1, 4, None, None)]
    human = status(*dead, cwd=tmp_path)
    assert human.returncode == 0, human.stderr
    assert f"{topic}  version" in human.stdout
    assert re.search(r"^\s+0\s+4\s+\?\s+\?$", human.stdout, re.M), human.stdout

    assert status("--timeout", "soon", cwd=tmp_path).returncode == 2
    negative = status("--root", str(root), "--timeout", "-1", cwd=tmp_path)
    assert negative.returncode == 2
    assert "--timeout must be positive" in negative.stderr
    no_group = status("--root", str(root), cwd=tmp_path, env=status_env(WAXLAKE_GROUP_ID=" "))
    assert no_group.returncode == 2
    assert no_group.stderr.splitlines() == [
        "waxlake: error: invalid setting WAXLAKE_GROUP_ID: empty; give a name"
    ]  # pydantic's dump of several lines before
    assert status("--json", cwd=tmp_path).returncode == 2  # no root anywhere


def test_status_of_a_current_state_table(log_broker, topic_factory, tmp_path):
    """A state table is partitioned by key bucket, not Kafka partition: its markers must still
    show (they showed as '-', lag the whole partition). Partition 1's only change is a delete,
    so it has a marker and no row. (`log_broker`: Tansu's high watermarks are wrong.)"""
    topic = topic_factory(2, bootstrap=log_broker)
    items: list[tuple[str, int, bytes, bytes | None, tuple[()]]]
    items = [(topic, 0, b"k%d" % i, b'{"n": %d}' % i, ()) for i in range(5)]
    items += [(topic, 1, b"gone", b'{"n": 9}', ()), (topic, 1, b"gone", None, ())]
    produce(log_broker, items)
    root = tmp_path / "lake"
    job = run_job(job_env(log_broker, [topic], root), None, flow="flows.upsert_to_delta:flow")
    assert job.returncode == 0, job.stderr[-3000:]

    common = ["--root", str(root), "--bootstrap-servers", log_broker, "--topics", topic]
    result = status(*common, "--json", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["tables"][0]["rows"] == 5
    assert partitions(doc) == [(0, 4, 5, 0), (1, 1, 2, 0)]


def test_status_of_routed_tables_names_their_topic(log_broker, topic_factory, tmp_path):
    """`flows.events_by_type` lands one topic in tables named for event types; their markers
    are the topic's (they showed as '-', and 'topic clicks not found on the broker')."""
    topic = topic_factory(1, bootstrap=log_broker)
    kinds = ["click", "view", "click", "buy"]
    produce(
        log_broker,
        [(topic, 0, None, b'{"type": "%s"}' % k.encode(), ()) for k in kinds],
    )
    root = tmp_path / "lake"
    job = run_job(job_env(log_broker, [topic], root), None, flow="flows.events_by_type:flow")
    assert job.returncode == 0, job.stderr[-3000:]
    env = status_env(WAXLAKE_TABLE_ROOT=str(root), KAFKA_BOOTSTRAP_SERVERS=log_broker)

    result = status("--json", cwd=tmp_path, env=env)

    assert result.returncode == 0, result.stderr
    assert "not found on the broker" not in result.stderr
    doc = json.loads(result.stdout)
    got = {t["table"]: (t["topic"], t["rows"], partitions({"tables": [t]})) for t in doc["tables"]}
    assert got == {
        "clicks": (topic, 2, [(0, 3, 4, 0)]),
        "other_events": (topic, 1, [(0, 3, 4, 0)]),
        "views": (topic, 1, [(0, 3, 4, 0)]),
    }
    human = status(cwd=tmp_path, env=env)
    assert f"clicks (topic {topic})  version" in human.stdout
    by_topic = status("--json", "--topics", topic, cwd=tmp_path, env=env)  # no table named so
    assert by_topic.returncode == 0, by_topic.stderr
    assert json.loads(by_topic.stdout) == doc


def test_status_under_the_group_guarantees_gaps_and_a_recreated_topic(
    log_broker, topic_factory, tmp_path
):
    """At-least-once keeps its position in the consumer group, not in `txn` markers; offsets
    recorded lost will never land, so they are no lag; a marker past the log's end is said."""
    topic = topic_factory(1, bootstrap=log_broker)
    root = tmp_path / "lake"
    env = job_env(log_broker, [topic], root, "at-least-once", on_data_loss="continue")
    produce(log_broker, simple_items(topic, 1, 100))
    assert run_job(env, root / "_recovery").returncode == 0
    produce(log_broker, simple_items(topic, 1, 100))
    delete_records(log_broker, topic, {0: 150})
    assert run_job(env, root / "_recovery").returncode == 0  # 100-149 recorded lost
    produce(log_broker, simple_items(topic, 1, 5))
    common = ["--root", str(root), "--bootstrap-servers", log_broker, "--topics", topic]

    doc = json.loads(status(*common, "--json", cwd=tmp_path, env=env).stdout)
    assert partitions(doc) == [(0, 199, 205, 5)]
    assert doc["tables"][0]["partitions"][0]["committed_by"] == f"group {env['WAXLAKE_GROUP_ID']}"
    no_env = {k: v for k, v in env.items() if k != "WAXLAKE_GROUP_ID"}
    by_flag = status(
        *common, "--group", env["WAXLAKE_GROUP_ID"], "--json", cwd=tmp_path, env=no_env
    )
    assert json.loads(by_flag.stdout) == doc, by_flag.stderr  # the operator names the group

    eo_root = tmp_path / "eo"
    eo_env = job_env(log_broker, [topic], eo_root, on_data_loss="continue")
    assert run_job(eo_env, eo_root / "_recovery").returncode == 0  # 150-204 (from the start)
    produce(log_broker, simple_items(topic, 1, 10))
    delete_records(log_broker, topic, {0: 215})  # 205-214 never land: no lag
    assert run_job(eo_env, eo_root / "_recovery").returncode == 0
    eo_common = ["--root", str(eo_root), "--bootstrap-servers", log_broker, "--topics", topic]
    doc = json.loads(status(*eo_common, "--json", cwd=tmp_path, env=eo_env).stdout)
    assert partitions(doc) == [(0, 204, 215, 0)]

    recreate_topic(log_broker, topic, 1)
    produce(log_broker, simple_items(topic, 1, 3))
    human = status(*eo_common, cwd=tmp_path, env=eo_env)
    assert human.returncode == 0, human.stderr
    assert re.search(r"^\s+0\s+204\s+3\s+\?$", human.stdout, re.M), human.stdout
    assert "partition 0: the table has landed up to offset 204 but the log ends at 3" in (
        human.stderr
    )


def test_output_into_a_closed_pipe_ends_quietly(tmp_path) -> None:
    """`waxlake status | head -3`: the reader left; no traceback, the shell's SIGPIPE code."""
    write_deltalake(
        str(tmp_path / "orders"),
        pa.table({"topic": ["orders"], "partition": pa.array([0], pa.int32()), "offset": [0]}),
    )
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [str(WAXLAKE_SCRIPT), "status", "--root", str(tmp_path), "--timeout", "1"],
            env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"},
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 141, proc.stderr
    assert "Traceback" not in proc.stderr
