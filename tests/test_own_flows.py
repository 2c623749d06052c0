"""Flows of your own: the README's example (a step of its own, routing by a field), the rule a
step must keep, a step that fails, and a stateful step's state surviving a lost disk."""

from __future__ import annotations

import json
import os
import random
import re
import signal
from collections import Counter
from pathlib import Path

import pytest
from deltalake import DeltaTable

from connectors.delta.markers import app_id
from tests.jobs import (
    REPO,
    diff,
    job_env,
    kill_at_random,
    kill_if_running,
    read_table,
    run_job,
    start_job,
    wait_while_running,
)
from tests.producing import BackgroundProducer, produce
from tests.test_data_loss import last_line

EXAMPLE = "flows.events_by_type:flow"
MISBEHAVING = "tests.flows.misbehaving:flow"
TABLES = ["clicks", "views", "other_events"]


def event(i: int) -> dict[str, object]:
    kind = ["click", "view", "purchase"][i % 3]
    return {"type": kind, "n": i, "ip": f"10.0.0.{i % 250}", "is_bot": i % 10 == 7}


def test_readme_example_is_the_shipped_flow() -> None:
    """README's "Write your own flow" shows flows/events_by_type.py as it is."""
    readme = (REPO / "README.md").read_text()
    code = (REPO / "flows" / "events_by_type.py").read_text()
    body = code[code.index("import bytewax") :]
    assert body.strip() in readme


def test_example_flow_routes_masks_and_filters(kafka_bootstrap, topic_factory, tmp_path):
    topic = topic_factory(2)
    produced = produce(
        kafka_bootstrap,
        [(topic, i % 2, None, json.dumps(event(i)).encode(), ()) for i in range(300)],
    )
    root = tmp_path / "lake"
    env = job_env(kafka_bootstrap, [topic], root)

    result = run_job(env, root / "_recovery", flow=EXAMPLE)

    assert result.returncode == 0, result.stderr[-3000:]
    by_key = {(r.partition, r.offset): json.loads(r.value or b"") for r in produced}
    want = {"clicks": "click", "views": "view", "other_events": "purchase"}
    for table, kind in want.items():
        rows = read_table(root / table)
        for partition, offset, ip, bot in rows.select(
            "partition", "offset", "ip", "is_bot"
        ).iter_rows():
            record = by_key[(partition, offset)]
            assert record["type"] == kind and not bot and ip.endswith(".0")
        expected = [k for k, r in by_key.items() if r["type"] == kind and not r["is_bot"]]
        assert sorted(rows.select("partition", "offset").iter_rows()) == sorted(expected)
        # Every table's markers cover every offset, rows or not (filtered bots included).
        markers = [
            DeltaTable(str(root / table)).transaction_version(app_id(topic, p)) for p in (0, 1)
        ]
        assert markers == [149, 149]
    again = run_job(env, root / "_recovery", flow=EXAMPLE)
    assert again.returncode == 0 and "rows written" not in again.stderr.replace(
        " 0 rows written", ""
    )


def test_routed_flow_survives_sigkills_exactly_once(kafka_bootstrap, topic_factory, tmp_path):
    seed = int(os.environ.get("WAXLAKE_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    topic = topic_factory(3)
    root = tmp_path / "lake"
    recovery = root / "_recovery"
    log = tmp_path / "job.log"
    env = job_env(kafka_bootstrap, [topic], root, max_batch_rows=400)

    def value_for(_topic: str, seq: int) -> bytes:
        return json.dumps({"type": ["click", "view", "purchase"][seq % 3], "n": seq}).encode()

    background = BackgroundProducer(kafka_bootstrap, {topic: 3}, rate=2_000, value_for=value_for)
    background.start()
    try:
        kill_at_random(env, recovery, log, root, TABLES, rng, 3, flow=EXAMPLE)
    finally:
        produced = background.stop()
    final = run_job(env, recovery, flow=EXAMPLE)
    assert final.returncode == 0, final.stderr[-3000:]
    context = f"seed={seed} (rerun with WAXLAKE_CRASH_SEED={seed})"
    kinds = {"clicks": "click", "views": "view", "other_events": "purchase"}
    for table, kind in kinds.items():
        mine = [r for r in produced if json.loads(r.value or b"")["type"] == kind]
        got = Counter(read_table(root / table).select("partition", "offset").iter_rows())
        found = diff(mine, topic, got)
        assert not found.lost, f"{context}: {table} lost {sum(found.lost.values())}"
        assert not found.duplicated, f"{context}: {table} duplicated {len(found.duplicated)}"
        assert not found.unknown, f"{context}: {table} holds records of another type"


@pytest.mark.parametrize(
    ("step", "message"),
    [
        (
            "drop_offset",
            r"step drop_offset on topic \S+ partition 0 offsets \d+-\d+: the rows lost their offset column",
        ),
        (
            "invent",
            r"step invent on topic \S+ partition 0 offsets \d+-\d+: offset \d+ is not a record the source read",
        ),
        (
            "twin_column",
            r"step twin_column on topic \S+ partition 0 offsets \d+-\d+: the rows have columns n, N, one column to Delta",
        ),
    ],
)
def test_a_step_breaking_the_rule_stops_at_the_first_batch(
    step, message, kafka_bootstrap, topic_factory, tmp_path
):
    topic = topic_factory(1)
    produce(
        kafka_bootstrap, [(topic, 0, None, json.dumps({"n": i}).encode(), ()) for i in range(50)]
    )
    root = tmp_path / "lake"
    env = {**job_env(kafka_bootstrap, [topic], root), "WAXLAKE_TEST_STEP": step}

    result = run_job(env, None, flow=MISBEHAVING)

    assert result.returncode == 1
    assert re.search(message, last_line(result.stderr)), result.stderr[-3000:]
    assert not (root / topic / "_delta_log").exists()


@pytest.mark.parametrize("step", ["split", "twice"])
def test_a_step_that_gives_a_batch_twice_to_one_table_stops_before_losing_any(
    step, kafka_bootstrap, topic_factory, tmp_path
):
    """A batch's coverage moves its partition's marker, so a second batch of the same records
    for the same table would land below the marker: dropped as already there if a size limit
    committed the first (a split), or landed twice (a copy). The job stops at the second, before
    any commit of the first, and the fixed step lands every record once."""
    topic = topic_factory(1)
    produced = produce(
        kafka_bootstrap, [(topic, 0, None, json.dumps({"n": i}).encode(), ()) for i in range(50)]
    )
    root = tmp_path / "lake"
    env = {
        **job_env(kafka_bootstrap, [topic], root, max_poll_records=10, max_batch_rows=4),
        "WAXLAKE_TEST_STEP": step,
    }

    failed = run_job(env, root / "_recovery", flow=MISBEHAVING)

    assert failed.returncode == 1, failed.stderr[-3000:]
    assert re.search(
        rf"step before the sink on topic {topic} partition 0 offsets 0-\d+: these offsets "
        rf"already reached table {topic} in another batch",
        last_line(failed.stderr),
    ), failed.stderr[-3000:]
    fixed = run_job({**env, "WAXLAKE_TEST_STEP": "keep"}, root / "_recovery", flow=MISBEHAVING)
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    table = Counter(read_table(root / topic).select("partition", "offset").iter_rows())
    found = diff(produced, topic, table)
    assert not found.lost and not found.duplicated


def test_a_step_that_gives_a_column_two_types_stops_with_one_line(
    kafka_bootstrap, topic_factory, tmp_path
):
    """Batches of one table are concatenated before a commit: a column that is int64 in one
    batch and string in the next cannot be, and the job says which column. Two tables fail
    alike: Bytewax closes the second while it unwinds from the first, and the job must still
    end with one line (a second error there used to abort the process, exit -6)."""
    topics = [topic_factory(1), topic_factory(1)]
    for topic in topics:
        items = [(topic, 0, None, json.dumps({"n": i}).encode(), ()) for i in range(40)]
        produce(kafka_bootstrap, items)
    root = tmp_path / "lake"
    env = {
        **job_env(kafka_bootstrap, topics, root, max_poll_records=10),
        "WAXLAKE_TEST_STEP": "retype",
    }

    result = run_job(env, None, flow=MISBEHAVING)

    assert result.returncode == 1, result.stderr[-3000:]
    line = last_line(result.stderr)
    names = "|".join(topics)
    assert re.search(rf"table ({names}): column n is int64 in some rows and string in others", line)
    for topic in topics:
        if (root / topic / "_delta_log").exists():
            assert read_table(root / topic)["offset"].to_list() == list(range(10))


def run_failing_step(
    bootstrap: str, topic: str, root: Path, step: str, name: str
) -> dict[str, str]:
    """Runs the misbehaving flow's `step` over 40 records in polls of 10, which fails on the
    batch of offsets 10-19 with a last line naming step `name`; the job's environment."""
    env = {**job_env(bootstrap, [topic], root, max_poll_records=10), "WAXLAKE_TEST_STEP": step}

    failed = run_job(env, root / "_recovery", flow=MISBEHAVING)

    assert failed.returncode == 1
    line = last_line(failed.stderr)
    assert re.search(
        rf"step {name} failed on topic {topic} partition 0 offsets 10-19: ValueError: 13 is unlucky",
        line,
    ), line
    return env


def test_a_failing_step_stops_the_job_and_a_fixed_one_resumes(
    kafka_bootstrap, topic_factory, tmp_path
):
    topic = topic_factory(1)
    produced = produce(
        kafka_bootstrap, [(topic, 0, None, json.dumps({"n": i}).encode(), ()) for i in range(40)]
    )
    root = tmp_path / "lake"
    env = run_failing_step(kafka_bootstrap, topic, root, "fail", "unlucky")
    # The fixed step (here: dead-lettering the batch) lands everything exactly once.
    fixed = run_job(
        {**env, "WAXLAKE_TEST_STEP": "fail_to_dead_letters"}, root / "_recovery", flow=MISBEHAVING
    )
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    table = Counter(read_table(root / topic).select("partition", "offset").iter_rows())
    dead = read_table(root / "_dead_letters" / topic)
    held = sorted(dead["offset"].to_list())  # the batch that held 13, however polls fell
    assert 13 in held and held == list(range(held[0], held[-1] + 1)) and len(held) <= 10
    assert set(dead["error_class"].to_list()) == {"StepFailed"}
    assert "step unlucky: ValueError: 13 is unlucky" in dead["error_message"][0]
    found = diff(produced, topic, table + Counter(dead.select("partition", "offset").iter_rows()))
    assert not found.lost and not found.duplicated


def test_a_failing_step_of_its_own_names_the_step_and_the_batch(
    kafka_bootstrap, topic_factory, tmp_path
):
    """A step not made with `rows` (here `op.stateful_map`) that raises: the last line still
    names the step, the topic, the partition and the offsets, found in the failed call."""
    topic = topic_factory(1)
    produce(
        kafka_bootstrap, [(topic, 0, None, json.dumps({"n": i}).encode(), ()) for i in range(40)]
    )

    run_failing_step(kafka_bootstrap, topic, tmp_path / "lake", "fail_stateful", "user_step")


def test_rows_filtered_out_still_move_the_markers(kafka_bootstrap, topic_factory, tmp_path):
    topic = topic_factory(1)
    produce(
        kafka_bootstrap, [(topic, 0, None, json.dumps({"n": i}).encode(), ()) for i in range(30)]
    )
    root = tmp_path / "lake"
    env = {**job_env(kafka_bootstrap, [topic], root), "WAXLAKE_TEST_STEP": "drop_all"}
    first = run_job(job_env(kafka_bootstrap, [topic], root), None, flow="flows.json_to_delta:flow")
    assert first.returncode == 0
    produce(
        kafka_bootstrap,
        [(topic, 0, None, json.dumps({"n": i}).encode(), ()) for i in range(30, 60)],
    )

    result = run_job(env, None, flow=MISBEHAVING)

    assert result.returncode == 0, result.stderr[-3000:]
    table = DeltaTable(str(root / topic))
    assert table.transaction_version(app_id(topic, 0)) == 59  # read, handled, not landed
    assert read_table(root / topic).height == 30


def test_a_stateful_step_keeps_its_state_when_the_disk_is_lost(
    kafka_bootstrap, topic_factory, s3_root, tmp_path
):
    """Recovery state is backed up next to the table on S3: delete the local recovery directory
    (a pod's lost disk), restart, and the step's count goes on."""
    from tests.s3 import s3_job_env

    topic = topic_factory(1)
    produce(kafka_bootstrap, [(topic, 0, None, f"v{i}".encode(), ()) for i in range(100)])
    env = s3_job_env(kafka_bootstrap, [topic], s3_root, "settings")
    recovery = tmp_path / "recovery"
    log = tmp_path / "job.log"
    proc = start_job(env, recovery, log, flow="tests.flows.counting:flow")
    try:
        wait_while_running(
            proc,
            log,
            lambda: s3_root.version(topic) is not None and s3_root.read(topic).height >= 100,
            "100 rows on S3",
            every=0.1,
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        kill_if_running(proc)
    backup = f"_recovery/{env['WAXLAKE_GROUP_ID']}/part-0.sqlite3"  # a folder per job
    assert any(k.endswith(backup) for k in s3_root.server.keys(s3_root.bucket))
    for part in recovery.iterdir():
        part.unlink()
    recovery.rmdir()
    produce(kafka_bootstrap, [(topic, 0, None, f"v{i}".encode(), ()) for i in range(100, 150)])

    result = run_job(env, recovery, flow="tests.flows.counting:flow")

    assert result.returncode == 0, result.stderr[-3000:]
    assert "restored recovery partitions [0]" in result.stderr
    table = s3_root.read(topic).sort("offset")
    assert table["offset"].to_list() == list(range(150))
    assert table["seen"].to_list() == list(range(150)), "the count started over: state lost"
    # Another job on the same root restores nothing of this one's (it failed on its store).
    neighbour = topic_factory(1)
    produce(kafka_bootstrap, [(neighbour, 0, None, b"v", ())])
    other_env = s3_job_env(kafka_bootstrap, [neighbour], s3_root, "settings")
    other = run_job(other_env, tmp_path / "other-recovery", flow="tests.flows.counting:flow")
    assert other.returncode == 0, other.stderr[-3000:]
    assert "restored recovery partitions" not in other.stderr
