"""The scripted rollout backend, importable as ``scripted`` by the integration tests and their workers."""

from pasodoble.testing.scripted import ScriptedBackend, scripted_factory

__all__ = ["ScriptedBackend", "scripted_factory"]
