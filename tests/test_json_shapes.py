"""JSON values of any shape, through the decode step's own parts and into a real Delta table on
disk: every record becomes a row or a dead letter, none is lost and none stops the job (the
shapes that did: empty objects, deep nesting, names differing by case, huge integers)."""

from __future__ import annotations

import json
import tempfile
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.decoding.case_clashes import CaseCheck
from connectors.decoding.json_values import JsonDecoder
from connectors.delta.table_writer import DeltaTableWriter
from tests.jobs import raw_records

NAMES = st.sampled_from(["a", "A", "b", "offset", "value", "key_x", "value_a", "", "x y", "é"])
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5)
    | st.sampled_from(["2024-01-01T00:00:00Z", "2024-01-01", "not a date"])
)
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(NAMES, inner, max_size=3)
)
POLLS = st.lists(st.lists(st.dictionaries(NAMES, VALUES, max_size=4), min_size=1, max_size=6))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(polls=POLLS)
def test_every_json_object_lands_or_is_a_dead_letter(polls: list[list[dict[str, Any]]]):
    decoder, case_check, first = JsonDecoder(max_record_bytes=1 << 20), CaseCheck(), 0
    with tempfile.TemporaryDirectory() as root:
        writer = DeltaTableWriter(root, "t", schema=None)
        for poll in polls:
            raw = raw_records([json.dumps(doc).encode() for doc in poll], first)
            split = decoder.split(raw)
            case_check.reject(split, raw)
            if split.rows.num_rows:
                writer.write_exactly_once(split.rows)
            dead = [o for table in split.dead for o in table["offset"].to_pylist()]
            landed = split.rows["offset"].to_pylist()
            assert sorted(landed + dead) == list(range(first, first + len(poll)))
            first += len(poll)
