"""The ``pasodoble`` command line: one subcommand per capability, each in ``pasodoble.commands``.

Every subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``. Only the module of
the subcommand being run is imported (its arguments are built only then), so ``pasodoble --help``
loads no heavy library. Options may come anywhere among a command's positional arguments
(``pasodoble train cfg.yaml --overwrite run.out_dir=X``). User errors (``errors.PasoDobleError``:
``ConfigError`` exits 2, ``UserError`` 1) print one line and exit non-zero, and so does an ``OSError``
(a path that cannot be written or read: the path and the cause, no traceback).
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
    "export": (
        "pasodoble.commands.export",
        "Write a role of a training checkpoint as a Hugging Face model directory.",
    ),
    "grade": ("pasodoble.commands.grade", "Grade model responses or extracted answers against gold answers."),
    "sft": ("pasodoble.commands.sft", "Cold-start supervised fine-tuning of a role."),
    "report": ("pasodoble.commands.report", "Compare evaluation results or run directories side by side."),
    "analyze": (
        "pasodoble.commands.analyze",
        "Analyses of trained models (memorization of generated problems).",
    ),
    "config": ("pasodoble.commands.config", "Print the default or resolved configuration, or its reference."),
    "knowledge": (
        "pasodoble.commands.knowledge",
        "Knowledge sources: write a local JSONL sample of one (knowledge sample) for offline use.",
    ),
    "plan": (
        "pasodoble.commands.plan",
        "Check a config against the GPUs (placement, batches, memory); print the time estimate and the launch.",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: the command names and their one-line help (no command module imported)."""
    parser = argparse.ArgumentParser(
        prog="pasodoble",
        description="PasoDoble: dual-play RL of LLMs. A Proposer writes math problems with answers, "
        "a Solver solves them; both are trained with GRPO. `pasodoble COMMAND --help` lists a "
        "command's options.",
    )
    parser.add_argument("--version", action="version", version=f"pasodoble {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, description=help_, add_help=False)
    return parser


def command_parser(name: str) -> argparse.ArgumentParser:
    """The full parser of one command (imports its module)."""
    module, help_ = COMMANDS[name]
    parser = argparse.ArgumentParser(prog=f"pasodoble {name}", description=help_)
    importlib.import_module(module).add_arguments(parser)
    return parser


def parse_command_args(name: str, argv: list[str]) -> argparse.Namespace:
    """Parse a command's arguments, options allowed anywhere among its positionals.

    ``parse_intermixed_args`` refuses parsers with nested subcommands (``sft``, ``toy``, ``analyze``);
    those are parsed as usual (they take no free positional lists).
    """
    parser = command_parser(name)
    try:
        args = parser.parse_intermixed_args(argv)
    except TypeError as exc:
        if not str(exc).startswith("parse_intermixed_args"):
            raise
        args = parser.parse_args(argv)
    args.command = name
    return args


def main(argv: list[str] | None = None) -> int:
    from pasodoble.errors import ConfigError, PasoDobleError

    argv = list(sys.argv[1:] if argv is None else argv)
    # The top level has only flags without values (-h, --version): the first other word is the command.
    at = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    parser = build_parser()
    if at is None or argv[at] not in COMMANDS:
        parser.parse_args(argv)  # --help, --version, or a usage error naming the unknown command
        parser.print_help()
        return 2
    if at > 0:
        parser.parse_args(argv[: at + 1])  # flags before the command (--help, --version, or an error)
    args = parse_command_args(argv[at], argv[at + 1 :])
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        from pasodoble.launch import check_launcher

        check_launcher(args.command, argv[at:])  # accelerate launch: honoured or refused (pasodoble.launch)
        return int(module.run(args) or 0)
    except PasoDobleError as exc:  # ConfigError (exit 2), UserError (exit 1)
        kind = "config error" if isinstance(exc, ConfigError) else "error"
        print(f"pasodoble {args.command}: {kind}: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # an output location that cannot be written: read-only, a file in the way, full
        path = f"{exc.filename}: " if exc.filename else ""
        cause = exc.strerror or " ".join(str(exc).split())[:200]
        print(f"pasodoble {args.command}: error: {path}{cause}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"pasodoble {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
