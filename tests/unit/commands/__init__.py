"""Tests of ``pasodoble.commands``."""
