"""Which Delta table the recovery store's positions belong to.

The store resumes each partition after what its tables held, so if a table is deleted (or
replaced by another one at the same place) while the store is kept, the records the old table
held would never land in the new one: a silent loss. So each table's sink partition keeps, as its
Bytewax snapshot, the ID of the Delta table it committed to (`metadata().id`, set when a table is
created and kept by appends, merges, OPTIMIZE, VACUUM and schema changes). At start a table that
is gone, or has another ID, is refused; `WAXLAKE_ON_DATA_LOSS=continue` accepts it with a warning.
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


def check_identity(settings: Settings, uri: str, recorded: str | None) -> str | None:
    """The table ID to keep in the store; raises if the table at `uri` is not the `recorded`
    one (the store's positions are past records it held) and WAXLAKE_ON_DATA_LOSS=fail."""
    if recorded is None:  # a store from before table IDs, or nothing committed yet
        return None
    found = table_id(uri, settings.storage_options)
    if found == recorded:
        return found
    what = (
        f"table {uri} is gone"
        if found is None
        else f"table {uri} was replaced (it now has table ID {found})"
    )
    problem = (
        f"{what}, but the recovery store resumes its partitions after the records that table ID "
        f"{recorded} held, so they would never land in it again"
    )
    if settings.on_data_loss is OnDataLoss.CONTINUE:
        log.warning(
            "%s; WAXLAKE_ON_DATA_LOSS=continue: the table takes records from where the store is",
            problem,
        )
        return found
    raise DataLossError(
        f"{problem}. Restore the table; or rebuild it from the topic: delete the recovery store "
        "too (under at-least-once and at-most-once also use a new WAXLAKE_GROUP_ID); or set "
        "WAXLAKE_ON_DATA_LOSS=continue to accept that the table starts where the store is"
    )
