"""`pasodoble train`: not built yet; it belongs to the dual-play engine (online/offline training, resume) capability."""

from __future__ import annotations

import argparse

from pasodoble.commands import not_built


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="arguments of the future command")


def run(args: argparse.Namespace) -> int:
    return not_built("train", "dual-play engine (online/offline training, resume)", args)
