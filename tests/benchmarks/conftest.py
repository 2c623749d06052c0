"""Benchmarks are run by hand (`python tests/benchmarks/bench_ingest.py`), never by pytest."""

collect_ignore_glob = ["*"]
