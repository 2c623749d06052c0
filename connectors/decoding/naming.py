"""Value fields <-> table columns: the one escaping rule of every decoded table.

A value field named like a column waxlake adds (the Kafka metadata, `is_tombstone`, a state
table's `key_bucket`, ...) is stored as `value_<name>`. So is a field whose name already looks
escaped (`value_offset` is stored as `value_value_offset`): no two fields share a column, and
each column names its field back, `field(column(name)) == name`, which is how the next run reads
an existing table's fields. Names compare as Delta compares column names, ignoring case
(`Timestamp` is stored as `value_Timestamp`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

ESCAPE = "value_"


@dataclass(frozen=True)
class Naming:
    """The names one kind of table takes for itself (and prefixes it takes, e.g. `key_`)."""

    taken: frozenset[str]
    prefixes: tuple[str, ...] = ()

    def with_taken(self, names: Iterable[str]) -> Naming:
        return Naming(self.taken | frozenset(names), self.prefixes)

    def within(self, prefix: str) -> Naming:
        """The naming of fields stored under `prefix` (decoded keys: `key_<field>`): what it
        takes is what this naming takes under that prefix (`key_bucket` takes `bucket`)."""
        cut = len(prefix)
        return Naming(
            frozenset(n[cut:] for n in self.taken if n.lower().startswith(prefix.lower()))
        )

    @cached_property
    def _folded(self) -> tuple[frozenset[str], tuple[str, ...]]:
        return frozenset(n.lower() for n in self.taken), tuple(p.lower() for p in self.prefixes)

    def clashes(self, column: str) -> bool:
        """True if `column` is one of the names taken, in Delta's eyes (ignoring case)."""
        return column.lower() in self._folded[0]

    def escaped(self, field: str) -> bool:
        """True if `field` is stored as `value_<field>`: it is taken, or an escaped name."""
        taken, prefixes = self._folded
        name = field.lower()
        while name not in taken and not name.startswith(prefixes):
            if not name.startswith(ESCAPE):
                return False
            name = name[len(ESCAPE) :]
        return True

    def column(self, field: str) -> str:
        return ESCAPE + field if self.escaped(field) else field

    def field(self, column: str) -> str:
        inner = column.removeprefix(ESCAPE)
        return inner if inner != column and self.escaped(inner) else column
