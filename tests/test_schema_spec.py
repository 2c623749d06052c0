"""`WAXLAKE_SCHEMA=module:attribute`: a polars schema named in Python becomes the table's types."""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import pytest

from connectors.config import ConfigError
from connectors.decoding.schemas import load_schema

ORDER_SCHEMA = pl.Schema(
    [("user", pl.String()), ("amount", pl.Float64()), ("items", pl.List(pl.Int64()))]
)
ORDER = dict(ORDER_SCHEMA)


@pytest.mark.parametrize("attribute", ["ORDER", "ORDER_SCHEMA"])
def test_a_polars_schema_named_by_module_and_attribute_types_the_fields(attribute):
    schema = load_schema(f"tests.test_schema_spec:{attribute}")

    # plain types, as Arrow's JSON reader makes them (polars says large_string, large_list)
    assert schema == pa.schema(
        [("user", pa.string()), ("amount", pa.float64()), ("items", pa.list_(pa.int64()))]
    )


def test_a_name_that_is_no_schema_is_a_start_up_error():
    with pytest.raises(ConfigError, match=r"WAXLAKE_SCHEMA: 'tests\.test_schema_spec:MISSING' is"):
        load_schema("tests.test_schema_spec:MISSING")
