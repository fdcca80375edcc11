"""The test suite, a package so that its helpers import by name (``tests.fakes``, ``tests.plugins``,
``tests.integration.workers``) with the repository root on ``sys.path``, as pytest's default import mode
puts it. Layout and how to run each part: tests/README.md."""
