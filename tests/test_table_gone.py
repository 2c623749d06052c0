"""A table deleted or replaced while its recovery store is kept must not skip records silently.

The store resumes each partition after what the old table held, so a new table at the same place
would never get those records. Each table's sink partition keeps the Delta table ID it committed
to in the store; at start a table that is gone or has another ID is refused (or, with
`WAXLAKE_ON_DATA_LOSS=continue`, accepted with a warning).
"""

from __future__ import annotations

import shutil

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

from connectors.kafka.records import SCHEMA
from tests.jobs import job_env, produce, read_table, run_job, simple_items
from tests.test_data_loss import last_line


def offsets(root, topic: str) -> list[int]:
    return sorted(read_table(root / topic)["offset"].to_list())


def test_a_deleted_table_with_its_recovery_store_kept_is_refused(
    kafka_bootstrap, topic_factory, tmp_path
):
    topic = topic_factory(1)
    root = tmp_path / "lake"
    recovery = root / "_recovery"
    env = job_env(kafka_bootstrap, [topic], root)
    produce(kafka_bootstrap, simple_items(topic, 1, 100))
    assert run_job(env, recovery).returncode == 0
    shutil.rmtree(root / topic)
    produce(kafka_bootstrap, simple_items(topic, 1, 50))

    refused = run_job(env, recovery)

    assert refused.returncode == 1, refused.stderr[-3000:]
    line = last_line(refused.stderr)
    assert line.startswith(f"waxlake: error: table {root / topic} is gone"), line
    assert "WAXLAKE_ON_DATA_LOSS=continue" in line and "recovery store" in line, line
    assert not (root / topic).exists()

    # The way out the message names first: rebuild the table from the topic, store deleted too.
    shutil.rmtree(recovery)
    rebuilt = run_job(env, recovery)
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    assert offsets(root, topic) == list(range(150))


def test_a_replaced_table_is_refused_and_continue_accepts_it(
    kafka_bootstrap, topic_factory, tmp_path
):
    topic = topic_factory(1)
    root = tmp_path / "lake"
    recovery = root / "_recovery"
    env = job_env(kafka_bootstrap, [topic], root)
    produce(kafka_bootstrap, simple_items(topic, 1, 100))
    assert run_job(env, recovery).returncode == 0
    old_id = str(DeltaTable(str(root / topic)).metadata().id)
    shutil.rmtree(root / topic)
    write_deltalake(str(root / topic), pa.Table.from_pylist([], SCHEMA), partition_by="partition")
    produce(kafka_bootstrap, simple_items(topic, 1, 50))

    refused = run_job(env, recovery)
    accepted = run_job({**env, "WAXLAKE_ON_DATA_LOSS": "continue"}, recovery)
    again = run_job(env, recovery)

    assert refused.returncode == 1, refused.stderr[-3000:]
    line = last_line(refused.stderr)
    assert f"table {root / topic} was replaced" in line and old_id in line, line
    assert accepted.returncode == 0, accepted.stderr[-3000:]
    assert "WARNING" in accepted.stderr and "was replaced" in accepted.stderr
    assert offsets(root, topic) == list(range(100, 150))
    assert again.returncode == 0, again.stderr[-3000:]  # the store now holds the new table's ID
