"""Routing one topic to several tables (`tests/flows/routed.py`): every record exactly once in
the table its `type` names, when a table had no rows yet, is added later, or several tables
write dead letters; and rows filtered out before their table exists are not read again."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable

from connectors.delta.markers import Mark, app_id
from connectors.delta.table_writer import DeltaTableWriter
from tests.jobs import job_env, read_table, run_job
from tests.producing import produce
from tests.test_data_loss import last_line

ROUTED = "tests.flows.routed:flow"
MISBEHAVING = "tests.flows.misbehaving:flow"


def events(topic: str, kind: str, numbers: range) -> list[tuple[str, int, None, bytes, tuple[()]]]:
    return [(topic, 0, None, json.dumps({"type": kind, "n": n}).encode(), ()) for n in numbers]


def numbers(root: Path, table: str) -> list[int]:
    if not (root / table / "_delta_log").exists():
        return []
    rows = read_table(root / table)
    return sorted(rows["n"].cast(int).to_list()) if "n" in rows.columns else []


def offsets_of(root: Path, tables: Sequence[str]) -> list[int]:
    found: list[int] = []
    for table in tables:
        if (root / table / "_delta_log").exists():
            found += read_table(root / table)["offset"].to_list()
    return sorted(found)


def test_a_table_whose_first_commit_failed_gets_its_records_after_the_fix(
    kafka_bootstrap, topic_factory, tmp_path
):
    """clicks landed 0-99; views then failed its commit while clicks (markers only) moved on to
    199. The fixed job resumed after clicks' marker, since views had no table to hold one, and
    views' records were never landed."""
    topic = topic_factory(1)
    root = tmp_path / "lake"
    env = job_env(kafka_bootstrap, [topic], root, max_poll_records=10)
    produce(kafka_bootstrap, events(topic, "click", range(100)))
    assert run_job(env, None, flow=ROUTED).returncode == 0
    produce(kafka_bootstrap, events(topic, "view", range(100, 200)))

    failed = run_job({**env, "WAXLAKE_TEST_STEP": "retype_views"}, None, flow=ROUTED)
    assert failed.returncode == 1
    assert "table views: column n is int64 in some rows and string in others" in last_line(
        failed.stderr
    )
    fixed = run_job(env, None, flow=ROUTED)

    assert fixed.returncode == 0, fixed.stderr[-3000:]
    assert numbers(root, "clicks") == list(range(100))
    assert numbers(root, "views") == list(range(100, 200))
    assert offsets_of(root, ["clicks", "views", "other_events"]) == list(range(200))


def test_a_table_added_to_the_routes_later_takes_the_records_from_then_on(
    kafka_bootstrap, topic_factory, tmp_path
):
    """A buy went to other_events until buys was routed: it stays there, and the new table
    must not make the partition start over (that would land the old buys again)."""
    topic = topic_factory(1)
    root = tmp_path / "lake"
    env = job_env(kafka_bootstrap, [topic], root)
    produce(
        kafka_bootstrap, events(topic, "click", range(10)) + events(topic, "buy", range(10, 20))
    )
    assert run_job(env, None, flow=ROUTED).returncode == 0
    produce(kafka_bootstrap, events(topic, "buy", range(20, 30)))

    result = run_job({**env, "WAXLAKE_TEST_BUYS": "1"}, None, flow=ROUTED)

    assert result.returncode == 0, result.stderr[-3000:]
    assert numbers(root, "other_events") == list(range(10, 20))
    assert numbers(root, "buys") == list(range(20, 30))
    assert offsets_of(root, ["clicks", "views", "other_events", "buys"]) == list(range(30))


def test_dead_letters_of_several_routed_tables_all_land(kafka_bootstrap, topic_factory, tmp_path):
    """Each table's sink wrote the dead letters of the same partition with one set of markers:
    the second writer's lower offsets were dropped as already there (half were lost)."""
    topic = topic_factory(1)
    kinds = ["click", "view", "buy"]
    produce(
        kafka_bootstrap,
        [
            (topic, 0, None, json.dumps({"type": kinds[i % 3], "n": i}).encode(), ())
            for i in range(300)
        ],
    )
    root = tmp_path / "lake"
    env = {
        **job_env(kafka_bootstrap, [topic], root, max_poll_records=10),
        "WAXLAKE_TEST_STEP": "letters",
    }

    result = run_job(env, root / "_recovery", flow=ROUTED)
    again = run_job(env, root / "_recovery", flow=ROUTED)

    assert (result.returncode, again.returncode) == (0, 0), result.stderr[-3000:]
    letters = read_table(root / "_dead_letters" / topic)
    assert sorted(letters["offset"].to_list()) == list(range(300))
    assert set(letters["error_class"].to_list()) == {"StepFailed"}
    assert offsets_of(root, ["clicks", "views", "other_events"]) == []


def test_rows_filtered_out_before_their_table_exists_are_not_read_again(
    kafka_bootstrap, topic_factory, tmp_path
):
    """No row, no table, so no marker: every start read the partition from its origin again."""
    topic = topic_factory(1)
    produce(
        kafka_bootstrap, [(topic, 0, None, json.dumps({"n": i}).encode(), ()) for i in range(30)]
    )
    root = tmp_path / "lake"
    env = {**job_env(kafka_bootstrap, [topic], root), "WAXLAKE_TEST_STEP": "drop_all"}

    first = run_job(env, None, flow=MISBEHAVING)
    again = run_job(env, None, flow=MISBEHAVING)

    assert (first.returncode, again.returncode) == (0, 0), (first.stderr + again.stderr)[-3000:]
    table = DeltaTable(str(root / topic))
    assert table.transaction_version(app_id(topic, 0)) == 29
    assert f"reading {topic}[0] from offset 30" in again.stderr
    assert read_table(root / topic).height == 0


def test_a_table_is_added_only_where_the_tables_agree_and_a_gone_one_is_refused(
    kafka_bootstrap, topic_factory, tmp_path
):
    """After a crash that left clicks' markers-only commit ahead of the others, a buys added
    started at the lowest marker and took again buys that other_events held. A table deleted
    alone was taken for a new one, its records marked done by the others."""
    topic = topic_factory(1)
    root = tmp_path / "lake"
    env = job_env(kafka_bootstrap, [topic], root)
    produce(kafka_bootstrap, events(topic, "buy", range(100)))
    assert run_job(env, None, flow=ROUTED).returncode == 0
    produce(kafka_bootstrap, events(topic, "view", range(100, 150)))
    produce(kafka_bootstrap, events(topic, "buy", range(150, 200)))
    clicks = DeltaTableWriter(str(root / "clicks"), topic, schema=None)
    clicks.write_exactly_once(pa.table({}), {0: Mark(199)})  # as a crash between commits leaves

    refused = run_job({**env, "WAXLAKE_TEST_BUYS": "1"}, None, flow=ROUTED)
    caught_up = run_job(env, None, flow=ROUTED)
    produce(kafka_bootstrap, events(topic, "buy", range(200, 210)))
    added = run_job({**env, "WAXLAKE_TEST_BUYS": "1"}, None, flow=ROUTED)

    assert refused.returncode == 2
    line = last_line(refused.stderr)
    assert f"topic {topic}: buys is new to the routes, but the topic's tables stand at" in line
    assert "partition 0: clicks 199, other_events 99, views 99" in line
    assert (caught_up.returncode, added.returncode) == (0, 0), added.stderr[-3000:]
    assert numbers(root, "other_events") == list(range(100)) + list(range(150, 200))
    assert numbers(root, "views") == list(range(100, 150))
    assert numbers(root, "buys") == list(range(200, 210))

    shutil.rmtree(root / "views")
    gone = run_job({**env, "WAXLAKE_TEST_BUYS": "1"}, None, flow=ROUTED)
    assert gone.returncode == 2
    assert f"table(s) views of topic {topic} are gone" in last_line(gone.stderr)
