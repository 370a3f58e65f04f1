"""threadline's benchmark suite: ``python -m bench`` (see bench/README.md).

Every ratio compares threadline with a baseline measured in the same process run, never
with a number from another day.
"""
