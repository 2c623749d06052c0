"""How waxlake writes Parquet: chosen by measurement (README, "Performance").

Opaque bytes (`key`, `value`) get neither dictionaries nor statistics: neither helps a query on
them and both cost CPU on every write. `offset` and `timestamp` keep statistics (queries and
waxlake's own MERGEs prune by them) but no dictionary: their values are (nearly) all distinct, so
a dictionary only costs CPU, bytes and read time (measured: 15% of the write CPU at 1 KB).
LZ4_RAW compresses fast with fast reads; ZSTD makes smaller files for a little more CPU;
`WAXLAKE_PARQUET_COMPRESSION` picks.
"""

from __future__ import annotations

from typing import Literal, cast

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import ColumnProperties, WriterProperties

Codec = Literal["UNCOMPRESSED", "SNAPPY", "GZIP", "BROTLI", "LZ4", "ZSTD", "LZ4_RAW"]
CODECS = ("uncompressed", "snappy", "gzip", "brotli", "lz4_raw", "zstd")
OPAQUE_COLUMNS = ("key", "value")
NO_DICTIONARY = (*OPAQUE_COLUMNS, "offset", "timestamp")
_PYARROW_CODECS = {"lz4_raw": "lz4", "uncompressed": "none"}  # pyarrow's lz4 is LZ4_RAW


def parse_compression(compression: str) -> tuple[str, int | None]:
    """`WAXLAKE_PARQUET_COMPRESSION` (a codec of CODECS, optionally `:level`) as (codec, level)."""
    codec, _, level = compression.partition(":")
    return codec, int(level) if level else None


def pyarrow_codec(compression: str) -> tuple[str, int | None]:
    """(codec, level) as pyarrow's Parquet writer names them."""
    codec, level = parse_compression(compression)
    return _PYARROW_CODECS.get(codec, codec), level


def check_compression(compression: str) -> None:
    """Raise ValueError where either writer would refuse `compression` (a level out of range,
    or one the codec has not), so that it fails at start-up rather than at the first commit."""
    writer_properties(compression)
    codec, level = pyarrow_codec(compression)
    try:
        pq.write_table(
            pa.table({"probe": [0]}),
            pa.BufferOutputStream(),
            compression=codec,
            compression_level=level,
        )
    except (pa.ArrowException, ValueError) as exc:
        raise ValueError(str(exc)) from None


def writer_properties(compression: str) -> WriterProperties:
    """`compression`: a codec of CODECS, optionally with a level (`zstd:3`)."""
    codec, level = parse_compression(compression)
    opaque = ColumnProperties(dictionary_enabled=False, statistics_enabled="NONE")
    distinct = ColumnProperties(dictionary_enabled=False)
    columns = dict.fromkeys(NO_DICTIONARY, distinct) | dict.fromkeys(OPAQUE_COLUMNS, opaque)
    return WriterProperties(
        compression=cast(Codec, codec.upper()),
        compression_level=level,
        column_properties=columns,
    )
