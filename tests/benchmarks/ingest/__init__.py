"""The ingest benchmark's parts (bench_ingest.py is its command line).

measure: one contender process, its wall clock, CPU and RSS. contenders: what each contender
runs. produce: the records. avro_records: the Avro contender's records and registry.
throughput, freshness: the two phases. results: figures and medians. report: tables and JSON.
"""

from __future__ import annotations

import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parents[1]  # tests/benchmarks: the contenders' scripts
REPO = BENCH_DIR.parents[1]
if str(REPO) not in sys.path:  # bench_ingest.py run as a script: make `connectors` importable
    sys.path.insert(0, str(REPO))
