"""The embedded arithmetic world (work in progress): today, the canonical problem family only."""
