"""Ingest benchmarks (not collected by pytest); see bench_ingest.py."""
