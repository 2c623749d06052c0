"""waxlake dataflows, run with `python -m bytewax.run flows.<module>:flow`."""
