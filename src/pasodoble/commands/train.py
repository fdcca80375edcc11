"""`pasodoble train CONFIG.yaml [key=value ...]`, `pasodoble train --resume RUN_DIR [key=value ...]` and
`pasodoble train CONFIG.yaml --init-from RUN/checkpoints/step_N [--init-state]` (a new run forked from a
checkpoint: ``init_from`` in the config, ``fork.py``)."""

from __future__ import annotations

import argparse
import json

from pasodoble.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="YAML config (e.g. configs/tiny.yaml)")
    parser.add_argument("overrides", nargs="*", help="section.field=value overrides, e.g. run.max_steps=4")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="delete an existing run in run.out_dir first (otherwise an existing run is an error)",
    )
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its newest checkpoint (overrides such as run.max_steps apply)",
    )
    parser.add_argument(
        "--init-from",
        metavar="CKPT",
        help="fork: start a new run (its own run.out_dir, step 0) from the weights of both roles in the "
        "checkpoint RUN/checkpoints/step_N (any layout; init_from.checkpoint)",
    )
    parser.add_argument(
        "--init-state",
        action="store_true",
        help="with --init-from: also carry its AdamW states, question buffer, diversity history and knowledge "
        "position where compatible (learning rates and schedule are this config's; init_from.state)",
    )


def run(args: argparse.Namespace) -> int:
    from pasodoble.api import resume, train

    fork = []  # --init-from / --init-state: the init_from section (fork.py)
    if args.init_from:
        fork.append(f"init_from.checkpoint={args.init_from}")
    if args.init_state:
        if not args.init_from:
            raise UserError(
                "--init-state goes with --init-from RUN/checkpoints/step_N (the checkpoint to fork)"
            )
        fork.append("init_from.state=true")
    if args.resume:
        if fork:
            raise UserError(
                "--init-from starts a new run from a checkpoint and --resume continues one; give only one of them"
            )
        overrides = list(args.overrides)
        if args.config is not None:
            if "=" not in args.config:
                raise UserError(
                    "with --resume, give only key=value overrides (the run's config.yaml is used)"
                )
            overrides.insert(0, args.config)
        result = resume(args.resume, overrides)
    else:
        if args.config is None:
            raise UserError("give a config file (e.g. configs/tiny.yaml) or --resume RUN_DIR")
        result = train(args.config, [*args.overrides, *fork], overwrite=args.overwrite)
    from pasodoble import distributed as dist

    if dist.is_main():
        print(json.dumps(result.summary()))
    return 0
