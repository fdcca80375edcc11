"""`pasodoble sft build-data` and `pasodoble sft train`: the cold start of both roles (docs/cold-start.md).

    pasodoble sft build-data --teacher MODEL_OR_URL --size N --out DIR [--config TRAIN.yaml | RUN_DIR] \\
        [--proposer-prompt-file F] [--solver-prompt-file F] [--knowledge SOURCE] [--min-kept K] \\
        [--teacher-model NAME] [--api-key-env VAR] [--concurrency K] [--timeout S] \\
        [--checker MODEL_OR_URL] [--checker-model NAME] [--checker-api-key-env VAR] ...
    pasodoble sft train --role proposer|solver --data FILE --model BASE --out DIR \\
        [--epochs E] [--lr LR] [--batch-size B] [--max-length L] [--packing] [--eval-fraction F] \\
        [--seed S] [--resume] [--log-with tensorboard,wandb] [--project P] [--run-name R]

Both print a JSON summary on stdout; build-data is resumable by rerunning the same command, train
with ``--resume``. build-data also prints its kept and dropped counts by reason on stderr, and exits
non-zero (one line) when fewer than ``--min-kept`` problems were kept. Multi-process ``sft train``
runs under ``torchrun --nproc_per_node N -m pasodoble.cli sft train ...`` (not ``accelerate launch``,
which is refused where it would start fewer processes than asked; ``pasodoble.launch``).
"""

from __future__ import annotations

import argparse
import json
import sys


def _add_build_data(p: argparse.ArgumentParser) -> None:
    from pasodoble.commands.options import add_dataclass_options
    from pasodoble.sft.build_data import BuildDataConfig

    add_dataclass_options(p, BuildDataConfig, exclude=("extra",))  # help written once, in the dataclass


def _add_train(p: argparse.ArgumentParser) -> None:
    from pasodoble.commands.options import add_dataclass_options
    from pasodoble.sft.train import SFTConfig

    add_dataclass_options(p, SFTConfig)  # one option per SFTConfig field, its help written there


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="sft_command", metavar="{build-data,train}")
    _add_build_data(sub.add_parser("build-data", help="build teacher-made SFT data for both roles"))
    _add_train(
        sub.add_parser(
            "train",
            help="fine-tune a base model on one role's SFT data",
            description="Fine-tune a base model on one role's SFT data (assistant-only loss). Several "
            "processes: torchrun --nproc_per_node N -m pasodoble.cli sft train ... --strategy "
            "fsdp2|ddp|deepspeed_zero2 (accelerate launch is refused where it starts fewer processes "
            "than it asks for: its --cpu or one-GPU launcher starts one).",
        )
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pasodoble.errors import UserError
    from pasodoble.rundir import check_writable

    if getattr(args, "out", None):
        check_writable(Path(args.out).expanduser(), "--out")

    if args.sft_command == "build-data":
        from pasodoble.commands.options import dataclass_values
        from pasodoble.sft.build_data import BuildDataConfig, build_data, check_kept, dropped, dropped_report

        card = build_data(BuildDataConfig(**dataclass_values(args, BuildDataConfig)))
        summary = {k: card[k] for k in ("files", "proposer", "solver", "usage")}
        print(
            json.dumps(
                {**summary, "dropped": dropped(card), "data_card": str(Path(args.out) / "data_card.md")}
            )
        )
        for line in dropped_report(card):
            print(f"pasodoble sft build-data: {line}", file=sys.stderr)
        check_kept(card, args.min_kept)
        return 0
    if args.sft_command == "train":
        from pasodoble.commands.options import dataclass_values
        from pasodoble.sft.train import SFTConfig, train_sft

        print(json.dumps(train_sft(SFTConfig(**dataclass_values(args, SFTConfig)))))
        return 0
    raise UserError("give a subcommand: pasodoble sft build-data ... or pasodoble sft train ...")
