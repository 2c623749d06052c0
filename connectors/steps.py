"""Your own steps between the source and the sink, keeping the rule of `connectors.batch`.

    op.map("mask", batches, rows(mask_emails))            # pa.Table -> pa.Table
    op.map("enrich", batches, frames(add_region))          # pl.DataFrame -> pl.DataFrame
    op.flat_map("route", batches, route("kind", {"click": "clicks", "view": "views"}))

A step that raises stops the job with one line naming the step and the batch; with
`on_error="dead_letter"` the batch's records go to the dead letters instead, with the error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Mapping
from typing import Literal

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from connectors.batch import KafkaBatch, StepRuleError, check_rule
from connectors.columns import one_array
from connectors.config import check_table_name
from connectors.delta.dead_letters import dead_letters
from connectors.errors import WaxlakeError

OnError = Literal["fail", "dead_letter"]
log = logging.getLogger(__name__)


class StepError(WaxlakeError):
    """A step of the user's flow raised on a batch."""


def _with_dead(batch: KafkaBatch, extra: pa.Table) -> pa.Table:
    if batch.dead is None or not batch.dead.num_rows:
        return extra
    return pa.concat_tables([batch.dead, extra])


def _records_of(batch: KafkaBatch, offsets: pa.Array) -> pa.Table:
    return batch.raw.filter(pc.is_in(batch.raw["offset"], value_set=offsets))


def rows(
    fn: Callable[[pa.Table], pa.Table], *, name: str | None = None, on_error: OnError = "fail"
) -> Callable[[KafkaBatch], KafkaBatch]:
    """A step on each batch's rows as an Arrow table; the result must keep the rule."""
    step = str(name or getattr(fn, "__name__", "step"))

    def apply(batch: KafkaBatch) -> KafkaBatch:
        if batch.rows.num_rows == 0:
            return batch
        try:
            out = batch.with_rows(_table(fn(batch.rows)))
        except StepRuleError as exc:
            raise StepRuleError(f"step {step} on {batch.describe()}: {exc}") from None
        except Exception as exc:
            if on_error == "fail":
                raise StepError(
                    f"step {step} failed on {batch.describe()}: {type(exc).__name__}: {exc}; "
                    "fix the step and restart the job (nothing past this batch was committed), "
                    "or make it rows(..., on_error='dead_letter')"
                ) from exc
            failed = _records_of(batch, one_array(batch.rows["offset"]))
            letters = dead_letters(
                failed, "StepFailed", f"step {step}: {type(exc).__name__}: {exc}"
            )
            return batch.with_rows(batch.rows.slice(0, 0), dead=_with_dead(batch, letters))
        check_rule(out, step)
        return out

    return apply


def _table(result: object) -> pa.Table:
    """A step's result as a table (a record batch is one); anything else breaks the rule."""
    if isinstance(result, pa.RecordBatch):
        return pa.Table.from_batches([result])
    if not isinstance(result, pa.Table):
        raise StepRuleError(f"it returned {type(result).__name__}, not a pyarrow Table of the rows")
    return result


def frames(
    fn: Callable[[pl.DataFrame], pl.DataFrame],
    *,
    name: str | None = None,
    on_error: OnError = "fail",
) -> Callable[[KafkaBatch], KafkaBatch]:
    """A step on each batch's rows as a polars DataFrame; the result must keep the rule."""

    step = str(name or getattr(fn, "__name__", "step"))

    def on_table(table: pa.Table) -> pa.Table:
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        result = fn(frame)
        if not isinstance(result, pl.DataFrame):
            raise StepRuleError(
                f"it returned {type(result).__name__}, not a polars DataFrame of the rows"
            )
        return result.to_arrow()

    return rows(on_table, name=step, on_error=on_error)


def route(
    column: str, tables: Mapping[Hashable, str], default: str | None = None
) -> Callable[[KafkaBatch], list[KafkaBatch]]:
    """Send each row to the table its `column` names (`tables`: value -> table; other values go
    to `default`, or to the dead letters as `Unrouted` without one). Every table gets a batch for
    every input batch, rows or not, so each table's markers cover every offset handled."""
    for name in [*tables.values(), *([] if default is None else [default])]:
        check_table_name(name, f"route({column!r}, ...)")
    names = list(dict.fromkeys([*tables.values(), *([] if default is None else [default])]))

    warned: list[bool] = []

    def split(batch: KafkaBatch) -> list[KafkaBatch]:
        values = _column_or_nulls(batch, column, warned)
        picked = {
            name: _is_in(values, [v for v, t in tables.items() if t == name])
            for name in tables.values()
        }
        known = _is_in(values, list(tables)) if batch.rows.num_rows else None
        dead = batch.dead
        if default is not None and known is not None:
            picked[default] = pc.or_(picked.get(default, pc.invert(known)), pc.invert(known))
        elif known is not None and not pc.all(pc.fill_null(known, False)).as_py():
            lost = pc.invert(pc.fill_null(known, False))
            offsets = one_array(pc.filter(batch.rows["offset"], lost))
            letters = dead_letters(
                _records_of(batch, offsets), "Unrouted", f"no table for this {column} value"
            )
            dead = _with_dead(batch, letters)
        out = []
        for index, name in enumerate(names):
            mask = pc.fill_null(picked[name], False) if batch.rows.num_rows else None
            chosen = batch.rows.filter(mask) if mask is not None else batch.rows
            # The batch's dead letters travel once, with the first table (their owner).
            out.append(batch.with_rows(chosen, table=name, dead=dead if index == 0 else None))
        return out

    return split


def _is_in(values: pa.ChunkedArray | pa.Array, keys: list[Hashable]) -> pa.ChunkedArray | pa.Array:
    """Where `values` is one of `keys`. A key of another type than the column matches nothing
    (a number column and string keys): those rows are the default's or Unrouted, not a crash."""
    try:
        return pc.is_in(values, value_set=pa.array(keys))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return pa.repeat(pa.scalar(False), len(values))


def _column_or_nulls(
    batch: KafkaBatch, column: str, warned: list[bool]
) -> pa.ChunkedArray | pa.Array:
    """The routing column; nulls where the rows have none yet (the JSON decoder adds a column
    once some record has the field), with one warning in case the name is misspelt."""
    if column in batch.rows.column_names:
        return batch.rows[column]
    if batch.rows.num_rows and not warned:
        warned.append(True)
        log.warning(
            "route: the rows of %s have no column %r (no record had that field yet, or the name "
            "is misspelt): they name no table",
            batch.describe(),
            column,
        )
    return pa.nulls(batch.rows.num_rows, pa.string())
