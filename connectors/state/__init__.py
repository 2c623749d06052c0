"""Current-state tables: one row per live key, kept exactly right by MERGE (see README)."""
