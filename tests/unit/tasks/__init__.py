"""Tests of ``pasodoble.tasks``."""
