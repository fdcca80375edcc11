"""Tests of ``pasodoble.topology``."""
