"""SIGTERM (what Kubernetes sends) stops the job cleanly: buffer committed, exit 0."""

from __future__ import annotations

import signal
import time

from tests.jobs import job_env, read_table, run_job, start_job
from tests.producing import produce, simple_items
from tests.test_operations import scrape


def test_sigterm_commits_the_buffer_and_exits_zero(kafka_bootstrap, topic_factory, tmp_path):
    topic = topic_factory(2)
    produced = produce(kafka_bootstrap, simple_items(topic, 2, 5_000))
    root = tmp_path / "lake"
    env = {**job_env(kafka_bootstrap, [topic], root), "BYTEWAX_DATAFLOW_API_ENABLED": "1"}
    log = tmp_path / "job.log"
    # A 60 s epoch: nothing is committed before the signal unless the stop commits it.
    proc = start_job(env, root / "_recovery", log, snapshot_s=60)
    try:
        deadline = time.monotonic() + 60
        buffered = ("waxlake_buffered_rows", (("topic", topic),))
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the job never buffered the records"
            try:
                if scrape().get(buffered) == len(produced):
                    break
            except OSError:
                pass
            time.sleep(0.2)
        assert not (root / topic).exists()  # still only in the buffer
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert "SIGTERM: stopping the sources, committing what is buffered" in text
    table = read_table(root / topic)
    assert sorted(table.select("partition", "offset").iter_rows()) == sorted(
        (r.partition, r.offset) for r in produced
    )
    # The stop left the job resumable: nothing new, nothing twice.
    again = run_job(job_env(kafka_bootstrap, [topic], root), root / "_recovery")
    assert again.returncode == 0, again.stderr[-3000:]
    assert read_table(root / topic).height == len(produced)
