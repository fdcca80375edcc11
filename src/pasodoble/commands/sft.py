"""`pasodoble sft`: not built yet; it belongs to the cold start (teacher-built SFT data and role fine-tuning) capability."""

from __future__ import annotations

import argparse

from pasodoble.commands import not_built


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="arguments of the future command")


def run(args: argparse.Namespace) -> int:
    return not_built("sft", "cold start (teacher-built SFT data and role fine-tuning)", args)
