"""Recovery next to the table, and bad configuration stopping the job with one clear line."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import pytest
from deltalake import DeltaTable

from connectors.config import load_settings
from connectors.flow_settings import unknown_settings
from connectors.local_broker import free_port
from tests.jobs import job_env, read_table, run_job
from tests.producing import produce, simple_items


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The job's one-line error (the last line on stderr)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines, "no error printed"
    return lines[-1]


def test_recovery_directory_is_created_and_initialised(kafka_bootstrap, topic_factory, tmp_path):
    topic = topic_factory(2)
    produce(kafka_bootstrap, simple_items(topic, 2, 100))
    root = tmp_path / "lake"
    recovery = root / "_recovery"
    env = job_env(kafka_bootstrap, [topic], root, recovery_partitions=2)

    result = run_job(env, recovery)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in recovery.glob("part-*.sqlite3")) == [
        "part-0.sqlite3",
        "part-1.sqlite3",
    ]
    assert read_table(root / topic).height == 100
    # An existing, complete store is used as it is, not re-initialised.
    again = run_job(env, recovery)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "initialised recovery store" not in again.stderr


def test_empty_recovery_directory_is_initialised(kafka_bootstrap, topic_factory, tmp_path):
    topic = topic_factory(1)
    produce(kafka_bootstrap, simple_items(topic, 1, 10))
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    result = run_job(job_env(kafka_bootstrap, [topic], tmp_path / "lake"), recovery)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (recovery / "part-0.sqlite3").exists()


def test_partly_present_recovery_store_is_an_error(kafka_bootstrap, topic_factory, tmp_path):
    topic = topic_factory(1)
    produce(kafka_bootstrap, simple_items(topic, 1, 10))
    root = tmp_path / "lake"
    recovery = root / "_recovery"
    env = job_env(kafka_bootstrap, [topic], root, recovery_partitions=3)
    assert run_job(env, recovery).returncode == 0
    (recovery / "part-1.sqlite3").unlink()
    version = DeltaTable(str(root / topic)).version()

    result = run_job(env, recovery)
    assert result.returncode == 2
    line = error_line(result)
    assert line.startswith("waxlake: error: BYTEWAX_RECOVERY_DIRECTORY:")
    assert "only partly there" in line and "missing [1]" in line
    assert sorted(p.name for p in recovery.glob("part-*.sqlite3")) == [
        "part-0.sqlite3",
        "part-2.sqlite3",
    ]
    assert DeltaTable(str(root / topic)).version() == version


def bad_configs(topic: str, tmp_path: Path) -> dict[str, tuple[dict[str, str], str]]:
    """Case -> (environment overrides, what the error line must say)."""
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("")
    return {
        "guarantee": ({"WAXLAKE_GUARANTEE": "twice"}, "WAXLAKE_GUARANTEE: Input should be"),
        "no-topics": ({"WAXLAKE_TOPICS": " , "}, "WAXLAKE_TOPICS is empty"),
        "missing-topic": (
            {"WAXLAKE_TOPICS": f"{topic},no-such-topic-xyz"},
            "WAXLAKE_TOPICS: topic(s) no-such-topic-xyz do not exist",
        ),
        "no-broker": (
            {"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"},
            "KAFKA_BOOTSTRAP_SERVERS: no Kafka broker answered",
        ),
        "bad-librdkafka-setting": (
            {"WAXLAKE_KAFKA_CONFIG": json.dumps({"no.such.setting": "1"})},
            "WAXLAKE_KAFKA_CONFIG: librdkafka rejected the configuration",
        ),
        "kafka-config-not-json": ({"WAXLAKE_KAFKA_CONFIG": "{not json"}, "WAXLAKE_KAFKA_CONFIG:"),
        "unwritable-root": (
            {"WAXLAKE_TABLE_ROOT": str(not_a_dir / "lake")},
            "WAXLAKE_TABLE_ROOT: cannot write to",
        ),
        "no-root": ({"WAXLAKE_TABLE_ROOT": ""}, "WAXLAKE_TABLE_ROOT is not set"),
        "root-scheme": (
            {"WAXLAKE_TABLE_ROOT": "htps://bucket/lake"},
            "WAXLAKE_TABLE_ROOT: htps:// is not a storage delta-rs writes to",
        ),
        "root-slash": (
            {"WAXLAKE_TABLE_ROOT": "s3:/bucket/lake"},
            "WAXLAKE_TABLE_ROOT: s3:/bucket/lake looks like a URI with a '/' missing",
        ),
        "empty-group": ({"WAXLAKE_GROUP_ID": " "}, "WAXLAKE_GROUP_ID: empty; give a name"),
        "empty-brokers": ({"KAFKA_BOOTSTRAP_SERVERS": ""}, "KAFKA_BOOTSTRAP_SERVERS: empty"),
        "batch-rows": ({"WAXLAKE_MAX_BATCH_ROWS": "0"}, "WAXLAKE_MAX_BATCH_ROWS:"),
        "codec-level": (
            {"WAXLAKE_PARQUET_COMPRESSION": "snappy:1"},
            "WAXLAKE_PARQUET_COMPRESSION: Codec 'snappy' doesn't support setting a "
            "compression level",
        ),
        "zstd-level": (
            {"WAXLAKE_PARQUET_COMPRESSION": "zstd:99"},
            "WAXLAKE_PARQUET_COMPRESSION: Compression level for ZSTD should fall",
        ),
        "log-level": ({"WAXLAKE_LOG_LEVEL": "LOUD"}, "WAXLAKE_LOG_LEVEL: Input should be"),
    }


CASES = list(bad_configs("t", Path(tempfile.mkdtemp())))


@pytest.mark.parametrize("case", CASES)
def test_bad_configuration_stops_with_one_clear_line(
    case, kafka_bootstrap, topic_factory, tmp_path
):
    topic = topic_factory(1)
    overrides, expected = bad_configs(topic, tmp_path)[case]
    root = tmp_path / "lake"
    env = {**job_env(kafka_bootstrap, [topic], root), **overrides}
    result = run_job(env, None, timeout=60)
    assert result.returncode == 2, result.stderr[-3000:]
    line = error_line(result)
    assert line.startswith("waxlake: error: ")
    assert expected in line
    assert not (root / topic).exists()


def test_misspelt_settings_are_named_and_upper_case_codecs_accepted(
    kafka_bootstrap, topic_factory, tmp_path
):
    topic = topic_factory(1)
    produce(kafka_bootstrap, simple_items(topic, 1, 10))
    root = tmp_path / "lake"
    env = {
        **job_env(kafka_bootstrap, [topic], root),
        "WAXLAKE_GUARANTE": "at-most-once",
        "WAXLAKE_PARQUET_COMPRESSION": "ZSTD:3",
        "WAXLAKE_TEST_BROKER": "kafka",  # the test tooling's own variables are not settings
        # Consumer-only librdkafka settings reach the consumers, and no admin client warns.
        "WAXLAKE_KAFKA_CONFIG": json.dumps({"queued.min.messages": 5000, "fetch.wait.max.ms": 50}),
    }
    result = run_job(env, None)
    assert result.returncode == 0, result.stderr[-3000:]
    warned = [line for line in result.stderr.splitlines() if "not a waxlake setting" in line]
    assert len(warned) == 1, result.stderr[-3000:]
    assert "WAXLAKE_GUARANTE is not a waxlake setting" in warned[0]
    assert "did you mean WAXLAKE_GUARANTEE?" in warned[0]
    assert "consumer property" not in result.stderr, result.stderr[-3000:]
    assert read_table(root / topic).height == 10
    assert all(".zstd." in p.name for p in (root / topic).rglob("*.parquet"))


def test_a_misspelt_setting_in_dotenv_is_warned_about_too(tmp_path, monkeypatch):
    """`.env` is read like the environment, but only the environment's names were checked."""
    (tmp_path / ".env").write_text("WAXLAKE_GUARANTE=at-most-once\nWAXLAKE_TOPICS=orders\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WAXLAKE_GUARANTE", raising=False)
    assert unknown_settings() == [
        "WAXLAKE_GUARANTE is not a waxlake setting (did you mean WAXLAKE_GUARANTEE?); it is ignored"
    ]


def test_settings_of_another_flow_are_warned_about(kafka_bootstrap, topic_factory, tmp_path):
    """WAXLAKE_KEY_FIELDS for a flow that keeps no current state was ignored in silence."""
    topic = topic_factory(1)
    produce(kafka_bootstrap, simple_items(topic, 1, 5))
    (tmp_path / "schema.json").write_text('{"n": "int64"}')
    env = {
        **job_env(kafka_bootstrap, [topic], tmp_path / "lake"),
        "WAXLAKE_KEY_FIELDS": "id",
        "WAXLAKE_SCHEMA": str(tmp_path / "schema.json"),
    }

    raw = run_job(env, None)
    decoded = run_job(
        {**env, "WAXLAKE_TABLE_ROOT": str(tmp_path / "typed")},
        None,
        flow="flows.json_to_delta:flow",
    )

    assert (raw.returncode, decoded.returncode) == (0, 0), raw.stderr[-3000:]
    unread = "is set, but this flow does not read it"
    assert f"WAXLAKE_KEY_FIELDS {unread}" in raw.stderr
    assert f"WAXLAKE_SCHEMA {unread}" in raw.stderr
    assert f"WAXLAKE_KEY_FIELDS {unread}" in decoded.stderr
    assert "WAXLAKE_SCHEMA is set" not in decoded.stderr


def test_setting_values_are_read_in_any_case(monkeypatch):
    """`WAXLAKE_GUARANTEE=Exactly-Once` and `WAXLAKE_LOG_FORMAT=JSON` were refused by case."""
    for name, value in {
        "WAXLAKE_TOPICS": "t",
        "WAXLAKE_TABLE_ROOT": "/tmp/lake",
        "WAXLAKE_GUARANTEE": "At-Least-Once",
        "WAXLAKE_ON_DATA_LOSS": "CONTINUE",
        "WAXLAKE_LOG_FORMAT": "JSON",
        "WAXLAKE_CDC_FORMAT": "Debezium",
    }.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert (settings.guarantee.value, settings.on_data_loss.value) == ("at-least-once", "continue")
    assert (settings.log_format, settings.cdc_format) == ("json", "debezium")
