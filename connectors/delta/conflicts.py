"""Retrying a commit that lost to another writer (a zombie instance, or an outside OPTIMIZE).

Every commit is made against the snapshot its checks were read from, so a concurrent commit makes
it fail with `CommitFailedError`; the caller re-reads (a fresh snapshot), re-checks and commits
again, up to `WAXLAKE_COMMIT_RETRIES` attempts, with a jittered backoff.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from deltalake.exceptions import CommitFailedError

from connectors.errors import ConcurrentWriteError
from connectors.ops import metrics

log = logging.getLogger(__name__)

T = TypeVar("T")


def retry_conflicts(
    uri: str, topic: str, attempts: int, commit: Callable[[int], T], refresh: Callable[[], None]
) -> T:
    """`commit(attempt)` until it does not conflict; `refresh()` before each new attempt."""
    for attempt in range(1, attempts + 1):
        try:
            return commit(attempt)
        except CommitFailedError as exc:
            metrics.COMMIT_CONFLICTS.labels(topic).inc()
            if attempt == attempts:
                raise ConcurrentWriteError(
                    f"{uri}: gave up after {attempt} conflicting commits: {exc}"
                ) from exc
            log.warning("%s: commit conflict (attempt %d), retrying: %s", uri, attempt, exc)
            refresh()
            time.sleep(min(0.05 * attempt, 1.0) * random.random())
    raise AssertionError("unreachable")
