"""The registry flow under failure: the registry going away and coming back, and SIGKILLs."""

from __future__ import annotations

import os
import random
import signal

import pytest

from tests.jobs import (
    diff,
    kill_at_random,
    kill_if_running,
    landed_keys,
    run_job,
    start_job,
    wait_while_running,
)
from tests.producing import BackgroundProducer
from tests.registry_support import (
    FLOW,
    avro,
    dead_letters,
    produce_values,
    registry_env,
    table_rows,
)
from tests.test_data_loss import wait_for_marker
from tests.test_registry_flow import V1, V2


def test_registry_outage_is_retried_and_nothing_becomes_a_dead_letter(
    kafka_bootstrap, topic_factory, tmp_path
):
    from connectors.local_broker.registry import RegistryUnavailable, start_registry

    try:  # its own registry, keeping its schemas on disk across the outage
        registry = start_registry(data_dir=tmp_path / "registry")
    except RegistryUnavailable as exc:
        pytest.skip(str(exc))
    topic = topic_factory(1)
    root = tmp_path / "lake"
    log = tmp_path / "job.log"
    with registry:
        produce_values(
            kafka_bootstrap, topic, avro(registry.url, topic, V1, [{"n": i} for i in range(10)])
        )
        later = avro(registry.url, topic, V2, [{"n": i, "unit": "g"} for i in range(10, 20)])
        proc = start_job(
            registry_env(kafka_bootstrap, [topic], root, registry.url), None, log, flow=FLOW
        )
        try:
            wait_for_marker(root, topic, 9, proc, log)
            registry.stop()
            produce_values(kafka_bootstrap, topic, later)  # a schema the job has not fetched
            wait_while_running(
                proc,
                log,
                lambda: "schema registry at" in log.read_text(),
                "the registry outage logged",
                every=0.1,
            )
            registry.start()
            wait_for_marker(root, topic, 19, proc, log)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
        finally:
            kill_if_running(proc)
    assert "did not answer for schema id" in log.read_text()
    assert dead_letters(root, topic) == []
    rows = table_rows(root, topic)
    assert [(r["n"], r["unit"]) for r in rows] == [(i, None) for i in range(10)] + [
        (i, "g") for i in range(10, 20)
    ]


def test_sigkill_with_mixed_schemas_and_bad_records(
    kafka_bootstrap, schema_registry, topic_factory, tmp_path
):
    """Each offset ends up exactly once in the table or the dead letters."""
    seed = int(os.environ.get("WAXLAKE_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    topic = topic_factory(2)
    v1 = avro(schema_registry, topic, V1, [{"n": 1}])[0]
    v2 = avro(schema_registry, topic, V2, [{"n": 2, "unit": "kg"}])[0]
    mix = [v1, v2, b"not framed", v1[:5] + b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", None]

    def value_for(_topic: str, seq: int) -> bytes | None:
        return mix[seq % len(mix)]

    root = tmp_path / "lake"
    recovery = root / "_recovery"
    log = tmp_path / "job.log"
    env = registry_env(kafka_bootstrap, [topic], root, schema_registry, max_batch_rows=500)
    background = BackgroundProducer(kafka_bootstrap, {topic: 2}, rate=2_000, value_for=value_for)
    background.start()
    try:
        kill_at_random(env, recovery, log, root, [topic], rng, 3, flow=FLOW)
    finally:
        produced = background.stop()
    final = run_job(env, recovery, flow=FLOW)
    assert final.returncode == 0, final.stderr[-3000:]
    found = diff(produced, topic, landed_keys(root, topic))
    context = f"seed={seed} (rerun with WAXLAKE_CRASH_SEED={seed})"
    assert not found.lost, f"{context}: {sum(found.lost.values())} lost"
    assert not found.duplicated, f"{context}: {sum(found.duplicated.values())} duplicated"
    assert not found.unknown
    classes = {d["error_class"] for d in dead_letters(root, topic)}
    assert classes == {"BadFraming", "InvalidPayload"}
    assert {r["unit"] for r in table_rows(root, topic) if r["schema_id"] is not None} == {
        None,
        "kg",
    }
