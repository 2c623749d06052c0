"""Topic creation for the tests, the demo and the benchmarks (the job itself never creates one)."""

from __future__ import annotations

import time
from collections.abc import Mapping


def create_topic(
    bootstrap: str,
    name: str,
    partitions: int,
    timeout: float = 20.0,
    config: Mapping[str, str] | None = None,
) -> None:
    """Create a topic and wait until its metadata shows every partition with a leader.

    Real Kafka answers CreateTopics before every partition has a leader in the metadata a
    client sees; producing or reading at once would then fail, so wait for that here.
    """
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [
            NewTopic(
                name, num_partitions=partitions, replication_factor=1, config=dict(config or {})
            )
        ],
        operation_timeout=10,
        request_timeout=15,
    )
    futures[name].result(timeout=timeout)
    deadline = time.monotonic() + timeout
    while True:
        meta = admin.list_topics(topic=name, timeout=5).topics.get(name)
        if (
            meta is not None
            and meta.error is None
            and len(meta.partitions) == partitions
            and all(p.leader >= 0 and p.error is None for p in meta.partitions.values())
        ):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {name} not visible with {partitions} partitions")
        time.sleep(0.05)
