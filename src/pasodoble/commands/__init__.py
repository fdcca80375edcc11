"""Subcommands of the ``pasodoble`` CLI: each module has ``add_arguments(parser)`` and ``run(args)``."""

from __future__ import annotations

import argparse
import sys


def not_built(name: str, capability: str, args: argparse.Namespace) -> int:
    """Answer for a subcommand whose capability has not landed yet: say which one, exit 1."""
    print(
        f"pasodoble {name}: not available yet: it belongs to the {capability} capability, "
        "which this version does not include (see the project's open issues).",
        file=sys.stderr,
    )
    return 1
