"""`pasodoble analyze memorization`: do generated problems come from recall? (the paper's analysis)

    pasodoble analyze memorization --model DIR --questions rollouts.jsonl [--prefix 0.2,0.4,0.6,0.8] --out DIR

Greedy continuation of the first x% of each problem (by tokens, no chat template), as many tokens as
the rest; exact match and ROUGE-L F1 against the rest. Writes memorization.{json,md,png} and
memorization_samples.jsonl.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="analysis", metavar="ANALYSIS", required=True)
    mem = sub.add_parser(
        "memorization",
        help="exact match and ROUGE-L of greedy continuations of problem prefixes",
        description="Prompt the model with the first x%% of each problem's tokens and compare its greedy "
        "continuation with the rest (exact match, ROUGE-L F1).",
    )
    mem.add_argument("--model", required=True, help="model directory or name (e.g. a Proposer checkpoint)")
    mem.add_argument(
        "--questions", required=True, help="JSONL with a 'problem' field per line (e.g. rollouts.jsonl)"
    )
    mem.add_argument("--prefix", default="0.2,0.4,0.6,0.8", help="comma-separated prefix fractions in (0, 1)")
    mem.add_argument(
        "--limit", type=int, default=None, help="only the first N distinct questions, N >= 1 (default: all)"
    )
    mem.add_argument(
        "--valid-only",
        action="store_true",
        help="skip rollouts whose 'valid' field is false (invalid questions)",
    )
    mem.add_argument("--batch-size", type=int, default=16, help="sequences per greedy-decoding batch")
    mem.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    mem.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    mem.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: 1 for models under 50M parameters)",
    )
    mem.add_argument("--out", required=True, help="output directory")


def run(args: argparse.Namespace) -> int:
    from pasodoble.errors import UserError
    from pasodoble.eval.memorization import (
        analyze_memorization,
        memorization_markdown,
        read_questions,
        write_memorization,
    )
    from pasodoble.eval.runner import load_model_for_eval
    from pasodoble.rundir import check_output_dir

    if args.limit is not None and args.limit < 1:  # 0 and -1 analysed one question
        raise UserError(f"--limit must be >= 1 (omit it for all questions); got {args.limit}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1; got {args.batch_size}")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be >= 1; got {args.threads}")
    check_output_dir(args.out, inputs={"--model": args.model})
    try:
        prefixes = [float(x) for x in args.prefix.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--prefix must be comma-separated numbers in (0, 1); got {args.prefix!r}") from None
    if not prefixes:
        raise UserError("--prefix needs at least one fraction")
    questions = read_questions(args.questions, limit=args.limit, valid_only=args.valid_only)
    model, tokenizer = load_model_for_eval(
        args.model, dtype=args.dtype, device=args.device, threads=args.threads
    )
    summary, details = analyze_memorization(
        model, tokenizer, questions, prefixes, batch_size=args.batch_size, progress=True
    )
    write_memorization(
        args.out, summary, details, model=args.model, questions=args.questions, n_questions=len(questions)
    )
    print(memorization_markdown(summary, args.model, args.questions), end="")
    print(
        f"wrote {args.out}/memorization.json, memorization.md, memorization.png, memorization_samples.jsonl"
    )
    return 0
