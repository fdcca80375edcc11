"""Unit tests, laid out like the package: ``tests/unit/<pkg>/test_<module>.py`` tests
``pasodoble/<pkg>/<module>.py``."""
