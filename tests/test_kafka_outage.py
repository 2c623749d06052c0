"""A broker that goes away is logged and retried, not a silent idle job."""

from __future__ import annotations

import time

from connectors.local_broker import LocalBroker, create_topic, start_kafka, start_tansu
from tests.jobs import job_env, start_job
from tests.producing import produce, simple_items


def test_broker_outage_is_logged_and_the_job_keeps_retrying(broker_kind, tmp_path):
    # Its own broker (this test stops it): Apache Kafka when the session runs on it, else Tansu.
    broker: LocalBroker = start_kafka() if broker_kind == "kafka" else start_tansu()
    log = tmp_path / "job.log"
    with broker:
        create_topic(broker.bootstrap, "outage", 1)
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
