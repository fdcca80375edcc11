"""The ``pasodoble`` command line: one subcommand per capability, each in ``pasodoble.commands``.

Every subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``; modules are
imported only when their subcommand runs, so ``pasodoble --help`` stays fast and heavy libraries load
only when needed. User errors (``ConfigError``, ``UserError``) print one line and exit non-zero.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from pasodoble import __version__

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("pasodoble.commands.train", "Run dual-play training (online or offline) from a YAML config."),
    "demo": ("pasodoble.commands.demo", "Run the embedded tiny arithmetic demo on CPU."),
    "toy": ("pasodoble.commands.toy", "Build the toy arithmetic world's data and models (toy build)."),
    "eval": ("pasodoble.commands.eval", "Evaluate a model on math benchmarks (pass@1 over k samples)."),
    "grade": ("pasodoble.commands.grade", "Grade model responses or extracted answers against gold answers."),
    "sft": ("pasodoble.commands.sft", "Cold-start supervised fine-tuning of a role."),
    "report": ("pasodoble.commands.report", "Compare evaluation results or run directories side by side."),
    "analyze": (
        "pasodoble.commands.analyze",
        "Analyses of trained models (memorization of generated problems).",
    ),
    "config": ("pasodoble.commands.config", "Print the default or resolved configuration, or its reference."),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pasodoble",
        description="PasoDoble: dual-play RL of LLMs. A Proposer writes math problems with answers, "
        "a Solver solves them; both are trained with GRPO.",
    )
    parser.add_argument("--version", action="version", version=f"pasodoble {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    from pasodoble.errors import ConfigError, UserError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except ConfigError as exc:
        print(f"pasodoble {args.command}: config error: {exc}", file=sys.stderr)
        return 2
    except UserError as exc:
        print(f"pasodoble {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"pasodoble {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
