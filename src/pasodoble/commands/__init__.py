"""Subcommands of the ``pasodoble`` CLI: each module has ``add_arguments(parser)`` and ``run(args)``."""

from __future__ import annotations
