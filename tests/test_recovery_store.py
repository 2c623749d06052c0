"""The recovery store's layout rules, on real Bytewax partitions (no broker needed)."""

from __future__ import annotations

import re
import shutil
import sqlite3
from pathlib import Path

import pytest

from connectors.config import ConfigError, Settings
from connectors.ops.recovery import prepare_recovery_dir
from connectors.ops.recovery_backup import backup, restore, stores_at_root
from tests.jobs import job_env, kill_if_running, run_job, start_job, wait_while_running
from tests.producing import produce, simple_items
from tests.test_data_loss import last_line


def parts(directory) -> list[str]:
    return sorted(p.name for p in directory.glob("part-*.sqlite3"))


def test_each_process_initialises_only_its_share(tmp_path):
    for process_id in range(3):
        prepare_recovery_dir(tmp_path / f"p{process_id}", 5, process_id=process_id, processes=3)
    assert parts(tmp_path / "p0") == ["part-0.sqlite3", "part-3.sqlite3"]
    assert parts(tmp_path / "p1") == ["part-1.sqlite3", "part-4.sqlite3"]
    assert parts(tmp_path / "p2") == ["part-2.sqlite3"]
    assert not list((tmp_path / "p0").glob(".waxlake-init-*"))


def test_a_populated_store_is_never_reinitialised(tmp_path):
    prepare_recovery_dir(tmp_path, 2)
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("part-*.sqlite3")}
    prepare_recovery_dir(tmp_path, 2)
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("part-*.sqlite3")} == before


def test_partitions_of_another_process_are_refused(tmp_path):
    prepare_recovery_dir(tmp_path, 2)  # a single process holds both
    with pytest.raises(ConfigError, match=r"holds partitions \[1\] that belong to other processes"):
        prepare_recovery_dir(tmp_path, 2, process_id=0, processes=2)


def test_a_missing_share_is_refused(tmp_path):
    prepare_recovery_dir(tmp_path, 4, process_id=1, processes=2)
    (tmp_path / "part-3.sqlite3").unlink()
    with pytest.raises(ConfigError, match=r"only partly there .* missing \[3\]"):
        prepare_recovery_dir(tmp_path, 4, process_id=1, processes=2)


def test_a_process_with_no_share_needs_no_partitions(tmp_path):
    """Scaling out past the partition count: the extra process holds none, which Bytewax allows."""
    prepare_recovery_dir(tmp_path / "p1", 1, process_id=1, processes=2)
    assert parts(tmp_path / "p1") == []


def test_not_a_store(tmp_path):
    (tmp_path / "part-0.sqlite3").write_bytes(b"not sqlite")
    with pytest.raises(ConfigError, match="cannot read the recovery store"):
        prepare_recovery_dir(tmp_path, 1)


def test_a_store_with_positions_of_a_topic_the_job_does_not_read_is_refused(
    kafka_bootstrap, topic_factory, tmp_path
):
    """A topic removed from WAXLAKE_TOPICS, or another job's store: Bytewax stopped with 'Key
    StateKey(...) is not in this worker's routing map', an unexpected RuntimeError."""
    first, second = topic_factory(1), topic_factory(1)
    recovery = tmp_path / "recovery"
    produce(kafka_bootstrap, simple_items(first, 1, 5))
    assert run_job(job_env(kafka_bootstrap, [first], tmp_path / "a"), recovery).returncode == 0

    other = run_job(job_env(kafka_bootstrap, [second], tmp_path / "b"), recovery)

    assert other.returncode == 2, other.stderr[-3000:]
    line = last_line(other.stderr)
    assert f"the recovery store in {recovery} holds the positions of topic(s) {first}" in line
    assert "If it is another job's store, give this job a recovery directory" in line
    assert f"delete {recovery} to start the store afresh" in line


def test_a_store_only_initialised_holds_no_position_to_win(tmp_path):
    """A start that stopped on a bad setting leaves an initialised store; under at-least-once
    `waxlake move-marker` refused to run because of it."""
    prepare_recovery_dir(tmp_path / "_recovery", 1)
    settings = Settings(table_root=str(tmp_path), topics=["t"])
    assert stores_at_root(settings) == []


COUNTING = "tests.flows.counting:flow"


def committed_epoch(part: Path) -> int | None:
    """The last epoch a recovery partition holds committed (None: none yet)."""
    db = sqlite3.connect(f"file:{part}?mode=ro", uri=True)
    try:
        epoch = db.execute("SELECT max(commit_epoch) FROM commits").fetchone()[0]
        return None if epoch is None else int(epoch)
    finally:
        db.close()


def test_a_killed_job_that_lost_its_disk_resumes_its_stateful_step(
    kafka_bootstrap, topic_factory, s3_root, tmp_path
):
    """SIGKILL (no final backup at exit) once the backup on S3 holds a few epochs past the
    rows, lose the local store, restart: the step's count goes on from the backup. Backups
    read from inside the job's process held only the initial store, never an epoch."""
    from tests.s3 import s3_job_env

    topic = topic_factory(1)
    produce(kafka_bootstrap, [(topic, 0, None, f"v{i}".encode(), ()) for i in range(100)])
    env = s3_job_env(kafka_bootstrap, [topic], s3_root, "settings")
    recovery, log, copy = tmp_path / "recovery", tmp_path / "job.log", tmp_path / "backup.sqlite3"
    key = f"{s3_root.prefix}/_recovery/{env['WAXLAKE_GROUP_ID']}/part-0.sqlite3"

    seen: list[int] = [-1]

    def backed_up() -> int:
        if key in s3_root.server.keys(s3_root.bucket, key):
            s3_root.server.client().download_file(s3_root.bucket, key, str(copy))
            seen.append(committed_epoch(copy) or -1)
        return seen[-1]

    proc = start_job(env, recovery, log, flow=COUNTING)
    try:
        wait_while_running(
            proc,
            log,
            lambda: s3_root.version(topic) is not None and s3_root.read(topic).height >= 100,
            "100 rows on S3",
            every=0.2,
        )
        target = (committed_epoch(recovery / "part-0.sqlite3") or 0) + 2
        try:
            wait_while_running(
                proc, log, lambda: backed_up() >= target, f"a backup of epoch {target}", every=0.3
            )
        except pytest.fail.Exception as exc:
            pytest.fail(f"backups seen held committed epochs {sorted(set(seen))}: {exc}")
        proc.kill()
        proc.wait(timeout=30)
    finally:
        kill_if_running(proc)
    shutil.rmtree(recovery)
    produce(kafka_bootstrap, [(topic, 0, None, f"v{i}".encode(), ()) for i in range(100, 150)])

    result = run_job(env, recovery, flow=COUNTING)

    assert result.returncode == 0, result.stderr[-3000:]
    restored = re.search(
        r"restored recovery partitions \[0\] .* at committed epoch (\d+)", result.stderr
    )
    assert restored and int(restored.group(1)) >= target, result.stderr[-3000:]
    table = s3_root.read(topic).sort("offset")
    assert table["offset"].to_list() == list(range(150))
    assert table["seen"].to_list() == list(range(150)), "the count started over: state lost"


def test_a_restore_says_which_epoch_it_resumes_from(s3_root, tmp_path, caplog):
    """A backup taken before the first snapshot restores no state, and the log says so instead
    of reporting the restore a success."""
    settings = Settings(
        table_root=s3_root.uri, topics=["t"], storage_options=s3_root.storage_options
    )
    prepare_recovery_dir(tmp_path / "initialised", 1)
    assert backup(settings, tmp_path / "initialised") == {0: None}

    assert restore(settings, tmp_path / "lost", {0}) == [0]

    assert parts(tmp_path / "lost") == ["part-0.sqlite3"]
    assert "holds no committed epoch" in caplog.text
    assert "restored recovery partitions" not in caplog.text
