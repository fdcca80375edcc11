"""Tests of ``pasodoble.toy``."""
