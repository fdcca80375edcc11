"""`pasodoble train CONFIG.yaml [key=value ...]` and `pasodoble train --resume RUN_DIR [key=value ...]`."""

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


def run(args: argparse.Namespace) -> int:
    from pasodoble.api import resume, train

    if args.resume:
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
        result = train(args.config, args.overrides, overwrite=args.overwrite)
    from pasodoble import distributed as dist

    if dist.is_main():
        print(json.dumps(result.summary()))
    return 0
