"""A broker that goes away is logged and retried, not a silent idle job."""

from __future__ import annotations

import time

from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from connectors.local_broker import start_tansu
from tests.jobs import job_env, produce, simple_items, start_job


def test_broker_outage_is_logged_and_the_job_keeps_retrying(tmp_path):
    broker = start_tansu()  # its own broker: this test stops it
    log = tmp_path / "job.log"
    with broker:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic("outage", num_partitions=1)])["outage"].result(timeout=20)
        produce(broker.bootstrap, simple_items("outage", 1, 10))
        proc = start_job(job_env(broker.bootstrap, ["outage"], tmp_path / "lake"), None, log)
        try:
            deadline = time.monotonic() + 60
            while "reading outage[0]" not in log.read_text():
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            broker.stop()
            while "Kafka error (librdkafka retries with backoff)" not in log.read_text():
                assert proc.poll() is None, f"job exited instead of retrying:\n{log.read_text()}"
                assert time.monotonic() < deadline, f"outage never logged:\n{log.read_text()}"
                time.sleep(0.1)
            assert proc.poll() is None
        finally:
            proc.kill()
            proc.wait(30)
    text = log.read_text()
    assert "WARNING" in text and "source outage[0]" in text
