"""Tests of ``pasodoble.eval``."""
