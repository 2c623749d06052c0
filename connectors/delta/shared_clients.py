"""What the tables of one sink share in a process: the commit threads, the group consumer and
the admin client of the topic-ID checks.

A commit thread and a consumer (four to five librdkafka threads) per table made a job over 100
topics run 500 threads. Here the tables share a few commit threads (each table still has at
most one flush in flight, so its commits stay in order) and one consumer for their group
offsets (committed under a lock: a commit is one short request).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient

from connectors.config import Settings
from connectors.kafka import group_offsets
from connectors.kafka.client import make_admin, make_consumer

COMMIT_THREADS = 4
"""Tables committing at once; more tables wait their turn (they are back-pressured anyway)."""

T = TypeVar("T")


class SharedClients:
    """Reference-counted: each table `join()`s when built and `leave()`s when closed; the last
    to leave stops the threads and closes the consumer."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._group_lock = threading.Lock()
        self._users = 0
        self._pool: ThreadPoolExecutor | None = None
        self._group: Consumer | None = None
        self._admin: AdminClient | None = None

    def join(self) -> None:
        with self._lock:
            self._users += 1
            if self._pool is None:
                self._pool = ThreadPoolExecutor(COMMIT_THREADS, thread_name_prefix="waxlake-commit")

    def leave(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users > 0:
                return
            pool, self._pool = self._pool, None
            group, self._group = self._group, None
            self._admin = None  # its threads end when it is collected
        if pool is not None:
            pool.shutdown(wait=True)
        if group is not None:
            group.close()

    def submit(self, call: Callable[..., T], *args: object) -> Future[T]:
        """Run `call(*args)` on a commit thread."""
        assert self._pool is not None, "join() first"
        return self._pool.submit(call, *args)

    def admin(self) -> AdminClient:
        """The admin client of the tables' checks before a commit, made at the first one."""
        with self._lock:
            if self._admin is None:
                self._admin = make_admin(self._settings)
            return self._admin

    def commit_group_offsets(
        self, topic: str, next_offsets: Mapping[int, int], metadata: str = ""
    ) -> None:
        with self._group_lock:
            if self._group is None:
                self._group = make_consumer(self._settings, what="group offsets")
            group_offsets.commit_group_offsets(self._group, topic, next_offsets, metadata)
