"""Tests of ``pasodoble.rollout``."""
