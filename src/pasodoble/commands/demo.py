"""`pasodoble demo`: not built yet; it belongs to the embedded tiny arithmetic world (demo) capability."""

from __future__ import annotations

import argparse

from pasodoble.commands import not_built


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="arguments of the future command")


def run(args: argparse.Namespace) -> int:
    return not_built("demo", "embedded tiny arithmetic world (demo)", args)
