"""A local S3 (a `moto` server process) for the tests, and helpers for tables on it.

`moto[server]` serves the S3 API over HTTP, with the conditional PUT (`If-None-Match: *`) that
delta-rs commits with, so the job talks to it exactly as it would to AWS: only the endpoint and the
dummy credentials differ. The fixtures `s3_server` and `s3_root` in conftest.py use this module.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from deltalake import DeltaTable

from tests.jobs import job_env

REGION = "us-east-1"
ACCESS_KEY = "test"
SECRET_KEY = "test"


class S3Unavailable(RuntimeError):
    """No local S3 server could be started (moto missing, or it did not come up)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class S3Server:
    """A running `python -m moto.server`; `endpoint` is its `http://127.0.0.1:PORT`."""

    endpoint: str
    process: subprocess.Popen[bytes]
    log: Path
    buckets: list[str] = field(default_factory=list)

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def storage_options(self) -> dict[str, str]:
        """delta-rs / polars storage options for this server (no extra conditional-put option:
        moto answers `If-None-Match: *` with 412 like AWS does)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
        }

    def new_bucket(self, prefix: str = "waxlake") -> str:
        """Create a bucket with a fresh name and return the name."""
        name = f"{prefix}-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        self.buckets.append(name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key under `prefix` in `bucket`."""
        paginator = self.client().get_paginator("list_objects_v2")
        return [
            obj["Key"]
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
            for obj in page.get("Contents", [])
        ]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_moto(workdir: Path, timeout: float = 30) -> S3Server:
    """Start `python -m moto.server` on a free port; return once it answers HTTP."""
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("boto3") is None:
        raise S3Unavailable("moto[server] and boto3 are not installed (pip install 'moto[server]')")
    problems = []
    for _ in range(3):  # the port is picked before moto binds it; another process may take it
        port = _free_port()
        log = workdir / f"moto-{port}.log"
        with log.open("wb") as out:  # a file, never a pipe: a full pipe would stall the server
            process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        server = S3Server(f"http://127.0.0.1:{port}", process, log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            if _answers(server.endpoint):
                return server
            time.sleep(0.05)
        server.stop()
        problems.append(f"port {port}: {log.read_text(errors='replace')[-500:]!r}")
    raise S3Unavailable("moto server did not answer: " + "; ".join(problems))


@dataclass(frozen=True)
class S3Root:
    """A fresh table root `s3://<bucket>/lake` and the options to reach it."""

    server: S3Server
    bucket: str
    prefix: str = "lake"

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @property
    def storage_options(self) -> dict[str, str]:
        return self.server.storage_options()

    def table_uri(self, topic: str) -> str:
        return f"{self.uri}/{topic}"

    def table(self, topic: str) -> DeltaTable:
        return DeltaTable(self.table_uri(topic), storage_options=self.storage_options)

    def read(self, topic: str) -> pl.DataFrame:
        return pl.read_delta(self.table_uri(topic), storage_options=self.storage_options)

    def version(self, topic: str) -> int | None:
        """The table's latest version, or None while it does not exist."""
        uri = self.table_uri(topic)
        if not DeltaTable.is_deltatable(uri, storage_options=self.storage_options):
            return None
        return DeltaTable(uri, storage_options=self.storage_options).version()

    def keys(self, topic: str) -> list[str]:
        return self.server.keys(self.bucket, f"{self.prefix}/{topic}/")


def s3_job_env(
    bootstrap: str,
    topics: Sequence[str],
    root: S3Root,
    options_via: str,
    guarantee: str = "exactly-once",
    **settings: str | int,
) -> dict[str, str]:
    """`tests.jobs.job_env` with the table root on S3.

    `options_via="settings"`: the storage options only in `WAXLAKE_STORAGE_OPTIONS` (JSON);
    `options_via="aws-env"`: only as the standard `AWS_*` environment variables.
    Any `AWS_*` variable of the test's own environment is dropped either way.
    """
    env = job_env(bootstrap, topics, Path("unused-local-root"), guarantee, **settings)
    env = {k: v for k, v in env.items() if not k.startswith("AWS_")}
    env["WAXLAKE_TABLE_ROOT"] = root.uri
    if options_via == "settings":
        env["WAXLAKE_STORAGE_OPTIONS"] = json.dumps(root.storage_options)
    elif options_via == "aws-env":
        env.update(root.storage_options)
    else:
        raise ValueError(f"options_via: {options_via!r}")
    return env
