"""Which Delta table the recovery store's positions belong to.

The store resumes each partition after what its tables held, so if a table is deleted (or
replaced by another one at the same place) while the store is kept, the records the old table
held would never land in the new one: a silent loss. So each table's sink partition keeps, as its
Bytewax snapshot, the ID of the Delta table it committed to (`metadata().id`, set when a table is
created and kept by appends, merges, OPTIMIZE, VACUUM and schema changes). At start a table that
is gone, or has another ID, is refused; `WAXLAKE_ON_DATA_LOSS=continue` accepts it with a warning.
The consumer group's offsets, the position of at-least-once and at-most-once, carry the ID in
their commit metadata and are checked the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from connectors.config import OnDataLoss, Settings
from connectors.delta import markers
from connectors.errors import DataLossError

log = logging.getLogger(__name__)


def table_id(uri: str, storage_options: Mapping[str, str]) -> str | None:
    """The ID of the table at `uri`, None when there is no table."""
    table = markers.open_table(uri, storage_options)
    return None if table is None else str(table.metadata().id)


GROUP_METADATA_PREFIX = "waxlake table "
"""+ table ID: the metadata of the group offsets a table's commits move (at-least-once and
at-most-once resume from them), so that they too are known to belong to that table."""


def group_metadata(table: str | None) -> str:
    return "" if table is None else GROUP_METADATA_PREFIX + table


def table_of_group_metadata(metadata: str | None) -> str | None:
    """The table ID in a group offset's metadata; None for offsets committed by another tool."""
    if metadata and metadata.startswith(GROUP_METADATA_PREFIX):
        return metadata.removeprefix(GROUP_METADATA_PREFIX)
    return None


def check_identity(
    settings: Settings,
    uri: str,
    recorded: str | None,
    *,
    by_group: bool = False,
    made_now: bool = False,
) -> str | None:
    """The table ID to keep; raises if the table at `uri` is not the `recorded` one (the
    recovery store's positions, or the group's with `by_group`, are past records it held) and
    WAXLAKE_ON_DATA_LOSS=fail. `made_now`: this start created the table at `uri` (a routed
    topic's), so a different ID means the recorded table is gone."""
    if recorded is None:  # positions from before table IDs, or nothing committed yet
        return None
    found = table_id(uri, settings.storage_options)
    if found == recorded:
        return found
    if found is None:
        what = f"table {uri} is gone"
    elif made_now:
        what = (
            f"table {uri} is gone (this start made an empty one at its place, as it does for "
            "every table of a topic that lands in several)"
        )
    else:
        what = f"table {uri} was replaced (it now has table ID {found})"
    holder = f"consumer group {settings.group_id}" if by_group else "the recovery store"
    problem = (
        f"{what}, but {holder} resumes its partitions after the records that table ID "
        f"{recorded} held, so they would never land in it again"
    )
    if settings.on_data_loss is OnDataLoss.CONTINUE:
        log.warning(
            "%s; WAXLAKE_ON_DATA_LOSS=continue: the table takes records from where %s resumes",
            problem,
            holder,
        )
        return found
    rebuild = (
        "use a new WAXLAKE_GROUP_ID (or reset the group's offsets) and delete the recovery store"
        if by_group
        else "delete the recovery store too (under at-least-once and at-most-once also use a "
        "new WAXLAKE_GROUP_ID)"
    )
    raise DataLossError(
        f"{problem}. Restore the table; or rebuild it from the topic: {rebuild}; or set "
        f"WAXLAKE_ON_DATA_LOSS=continue to accept that the table starts where {holder} resumes"
    )
