"""Integration tests: several modules together, often in subprocesses (the entry points in ``workers/``)."""
