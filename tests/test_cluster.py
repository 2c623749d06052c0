"""Several processes (`-i/-a`, as the StatefulSet runs them) and several workers (`-w`)."""

from __future__ import annotations

import signal
import subprocess
from collections import Counter

import pytest

from tests.jobs import (
    REPO,
    cluster_commands,
    job_command,
    job_env,
    read_table,
    run_cluster,
    run_job,
    versions,
    wait_until_version_grows,
)
from tests.producing import BackgroundProducer, Record, produce, simple_items


def assert_exactly_once(root, produced: list[Record]) -> None:
    for topic in {r.topic for r in produced}:
        want = Counter((r.partition, r.offset) for r in produced if r.topic == topic)
        got = Counter(read_table(root / topic).select("partition", "offset").iter_rows())
        assert got == want, (
            f"{topic}: lost {sum((want - got).values())}, extra {sum((got - want).values())}"
        )


def test_two_processes_and_two_workers_land_what_one_process_lands(
    kafka_bootstrap, topic_factory, tmp_path
):
    topics = [topic_factory(3), topic_factory(2)]
    produced = produce(
        kafka_bootstrap, simple_items(topics[0], 3, 3_000) + simple_items(topics[1], 2, 2_000)
    )

    cluster_root = tmp_path / "cluster"
    results = run_cluster(
        job_env(kafka_bootstrap, topics, cluster_root), cluster_root / "_recovery", 2
    )
    assert [r.returncode for r in results] == [0, 0], (
        results[0].stderr[-2000:] + results[1].stderr[-2000:]
    )
    assert_exactly_once(cluster_root, produced)

    workers_root = tmp_path / "workers"
    env = job_env(kafka_bootstrap, topics, workers_root)
    result = subprocess.run(
        job_command(workers_root / "_recovery", extra=["-w", "2"]),
        env={**env, "WAXLAKE_STOP_AT_END": "1"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert_exactly_once(workers_root, produced)


def test_sigkill_one_process_stops_the_cluster_and_a_restart_resumes(
    kafka_bootstrap, topic_factory, tmp_path
):
    topics = {topic_factory(3): 3, topic_factory(2): 2}
    names = list(topics)
    root = tmp_path / "lake"
    recovery = root / "_recovery"
    env = job_env(kafka_bootstrap, names, root, max_batch_rows=700)
    background = BackgroundProducer(kafka_bootstrap, topics, rate=3_000).start()
    try:
        for victim in (1, 0):
            before = versions(root, names)
            logs = [tmp_path / f"proc-{i}.log" for i in range(2)]
            procs = []
            for cmd, log in zip(cluster_commands(recovery, 2), logs, strict=True):
                with log.open("ab") as out:
                    procs.append(
                        subprocess.Popen(
                            cmd, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT
                        )
                    )
            wait_until_version_grows(
                lambda: versions(root, names), before, procs[victim], logs[victim]
            )
            procs[victim].send_signal(signal.SIGKILL)
            survivor = procs[1 - victim]
            # Static membership: the survivor notices its peer is gone and exits by itself.
            try:
                survivor.wait(timeout=60)
            except subprocess.TimeoutExpired:
                survivor.kill()
                pytest.fail("the surviving process kept running without its peer")
            assert survivor.returncode != 0
            procs[victim].wait(30)
    finally:
        produced = background.stop()
    results = run_cluster(env, recovery, 2)
    assert [r.returncode for r in results] == [0, 0], results[0].stderr[-2000:]
    assert_exactly_once(root, produced)


def test_rescale_one_to_two_processes_and_back(kafka_bootstrap, topic_factory, tmp_path):
    topic = topic_factory(4)
    root = tmp_path / "lake"
    recovery = root / "_recovery"
    env = job_env(kafka_bootstrap, [topic], root)
    produced: list[Record] = []
    for step, processes in enumerate((1, 2, 1)):
        produced += produce(
            kafka_bootstrap,
            [(topic, i % 4, None, f"{step}:{i}".encode(), []) for i in range(2_000)],
        )
        if processes == 1:
            # A single process keeps its recovery store in proc-0, as process 0 of a cluster does.
            result = run_job(env, recovery / "proc-0")
            assert result.returncode == 0, result.stderr[-3000:]
        else:
            results = run_cluster(env, recovery, processes)
            assert [r.returncode for r in results] == [0, 0], results[0].stderr[-2000:]
        assert_exactly_once(root, produced)
