"""Tests of ``pasodoble.sft``."""
