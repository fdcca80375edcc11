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
    from pasodoble.sft.build_data import BuildDataConfig

    d = BuildDataConfig()
    p.add_argument(
        "--teacher",
        required=True,
        help="teacher: a local model name/directory ('tiny' for smoke tests) or an OpenAI-compatible "
        "chat-completions base URL (http(s)://host/v1)",
    )
    p.add_argument(
        "--config",
        default=None,
        metavar="TRAIN.yaml|RUN_DIR",
        help="training config (or run directory) whose prompts (proposer.prompt, solver.prompt), "
        "rollout.open_thinking, per-role temperature and max_new_tokens, knowledge section and "
        "rewards.leak_check the teacher gets, as the RL rollouts will; explicit options win",
    )
    p.add_argument(
        "--proposer-prompt-file",
        default=None,
        metavar="FILE",
        help="UTF-8 file holding the Proposer prompt template (with {snippet}); over --config's",
    )
    p.add_argument(
        "--solver-prompt-file",
        default=None,
        metavar="FILE",
        help="UTF-8 file holding the Solver prompt template (with {problem}); over --config's",
    )
    p.add_argument(
        "--knowledge",
        default=None,
        help="knowledge source, as knowledge.source: a .jsonl/.parquet/.txt file or directory, a datasets "
        "name, 'tiny' or 'toy' (default: --config's knowledge.source, else tiny); "
        "`pasodoble knowledge sample` writes a local sample of any source",
    )
    p.add_argument("--size", type=int, required=True, help="Proposer examples (kept problems) to build")
    p.add_argument("--out", required=True, help="output directory (rerun the same command to resume)")
    p.add_argument(
        "--min-kept",
        type=int,
        default=d.min_kept,
        help="exit non-zero, naming the drop reasons, when fewer problems are kept (default %(default)s)",
    )
    p.add_argument(
        "--teacher-model", default=None, help="model name at the endpoint (default: first of /models)"
    )
    p.add_argument(
        "--api-key-env",
        default=None,
        metavar="VAR",
        help="environment variable holding the endpoint's API key (default: OPENAI_API_KEY if set, else none)",
    )
    p.add_argument(
        "--checker",
        default=None,
        help="independent checker model or URL that must reach the proposed answer (default: the teacher "
        "prompted as Solver)",
    )
    p.add_argument("--checker-model", default=None, help="model name at the checker endpoint")
    p.add_argument(
        "--checker-api-key-env", default=None, metavar="VAR", help="API-key variable of the checker"
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=d.concurrency,
        help="endpoint requests in flight (default %(default)s)",
    )
    p.add_argument(
        "--timeout", type=float, default=d.timeout, help="seconds per HTTP request (default %(default)s)"
    )
    p.add_argument(
        "--max-retries", type=int, default=d.max_retries, help="retries per request (default %(default)s)"
    )
    p.add_argument(
        "--backoff", type=float, default=d.backoff, help="first retry delay in seconds, doubled per retry"
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="teacher sampling temperature (default: --config's per role, else 0.6)",
    )
    p.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        help="generation cap per response in tokens (default: --config's max_new_tokens per role, else 4096)",
    )
    p.add_argument(
        "--check-samples",
        type=int,
        default=d.check_samples,
        help="checker answers per problem; half must agree",
    )
    p.add_argument(
        "--solver-samples", type=int, default=d.solver_samples, help="teacher Solver answers per kept problem"
    )
    p.add_argument(
        "--max-requests", type=int, default=None, help="Proposer request budget (default 4 x --size)"
    )
    p.add_argument("--seed", type=int, default=d.seed, help="snippet sampling seed")
    p.add_argument(
        "--text-field",
        default=None,
        help="knowledge record field holding the text (default: --config's, else text)",
    )
    p.add_argument(
        "--max-snippet-tokens",
        type=int,
        default=None,
        help="snippet cap, in tokens (default: --config's, else 512)",
    )
    p.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer that measures the snippet cap (the student's; default: --config's Proposer model when "
        "it is a local directory, else the local teacher's, or 4 chars per token for endpoints)",
    )
    p.add_argument(
        "--leak-check",
        default=None,
        choices=("token", "substring", "off"),
        help="answer-leak rule (default: --config's rewards.leak_check, else token)",
    )
    p.add_argument(
        "--generation-batch-size", type=int, default=d.generation_batch_size, help="local teacher batch"
    )
    p.add_argument(
        "--dtype", default=d.dtype, choices=("float32", "bfloat16", "float16"), help="local teacher dtype"
    )
    p.add_argument("--grader-workers", type=int, default=d.grader_workers, help="answer-grader processes")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


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
        from pasodoble.sft.build_data import BuildDataConfig, build_data, check_kept, dropped, dropped_report

        values = {k: v for k, v in vars(args).items() if k in BuildDataConfig.__dataclass_fields__}
        card = build_data(BuildDataConfig(**values, progress=not args.no_progress))
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
