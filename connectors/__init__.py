"""waxlake connectors: the Kafka source, the Delta sink and their helpers."""
