"""`pasodoble toy build [--out DIR] [--export] [--until STAGE] [--set KEY=VALUE ...]`: build the toy
world's data, tokenizer and models."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pasodoble.toy.build import STAGES

    sub = parser.add_subparsers(dest="toy_command", required=True)
    b = sub.add_parser(
        "build", help="build data, tokenizer, base model and both cold-start models (resumable)"
    )
    b.add_argument("--out", default="runs/toy-build", help="build directory (stages already there are kept)")
    b.add_argument(
        "--export",
        action="store_true",
        help="also copy the three models in bfloat16 into the package (pasodoble/assets/toy), as shipped",
    )
    b.add_argument(
        "--until",
        choices=list(STAGES),
        default=None,
        help="stop after this stage (e.g. base: the stages that do not depend on the Solver's data)",
    )
    b.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change a build setting (toy.build.BuildSettings, e.g. solver_examples=32000); the stages "
        "that read it are built again, the others kept",
    )


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace
    from pathlib import Path

    from pasodoble.errors import UserError
    from pasodoble.rundir import check_writable
    from pasodoble.toy.build import STAGES, BuildSettings, build, export_assets, parse_setting

    out = Path(args.out).expanduser()
    check_writable(out, "--out")
    # a build directory holds build.json once its first stage is done, and stage directories before that;
    # a non-empty directory with neither is someone else's
    if (
        out.is_dir()
        and not (out / "build.json").is_file()
        and any(p.name not in STAGES for p in out.iterdir())
    ):
        raise UserError(
            f"--out {out} is a non-empty directory that holds no toy build (no build.json); choose a new or "
            "empty directory, or the --out of an earlier build to finish it"
        )
    settings = replace(BuildSettings(), **dict(parse_setting(text) for text in args.settings))
    if args.export and (args.until is not None or args.settings):
        raise UserError("--export ships the default build: use it without --until and --set")
    manifest = build(args.out, settings, until=args.until)
    print(
        json.dumps(
            {k: manifest[k] for k in ("seconds", "solver_validation_accuracy") if k in manifest}, indent=1
        )
    )
    if args.export:
        print(f"exported to {export_assets(args.out)}")
    return 0
