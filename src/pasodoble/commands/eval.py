"""`pasodoble eval`: pass@1 over k samples (plus maj@k and pass@k) on math benchmarks, resumable.

    pasodoble eval --model PATH_OR_NAME --benchmarks math500,gsm8k,aime24,aime25,amc23,olympiadbench \\
        [--samples 6] [--temperature 0.6] [--max-new-tokens N] [--few-shot 0|4] [--backend hf|vllm] \\
        [--limit N] [--seed S] [--data-dir DIR] [--extract strict|flexible] --out DIR
    pasodoble eval --model RUN/checkpoints/step_N --role solver|proposer ... --out DIR

A training checkpoint is evaluated with the role's weights in its starting model, and with the run's
config.yaml as the default --train-config (its Solver prompt, open thinking and eval.extract).

Writes OUT/results.json, OUT/results.md and OUT/samples.jsonl (see docs/evaluation.md). Rerunning the
same command after an interruption continues where it stopped.
"""

from __future__ import annotations

import argparse

from pasodoble.config import EvalConfig, GraderConfig, RolloutConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    e, r, g = EvalConfig(), RolloutConfig(), GraderConfig()
    parser.add_argument(
        "--model",
        required=True,
        help="model directory, Hugging Face name ('tiny' = a tiny random model) or training checkpoint "
        "RUN/checkpoints/step_N (with --role)",
    )
    parser.add_argument(
        "--role",
        default=None,
        choices=("proposer", "solver"),
        help="with a training checkpoint as --model: which role's model to evaluate",
    )
    parser.add_argument(
        "--benchmarks",
        default="aime24,aime25,amc23,gsm8k,math500,olympiadbench",
        help="comma-separated registry names (aime24, aime25, amc23, gsm8k, math500, olympiadbench, minerva; "
        "'paper' = the first six) or JSONL paths with problem/answer fields (default: the paper's six)",
    )
    parser.add_argument(
        "--samples", type=int, default=e.samples, help="samples per problem, k (default %(default)s)"
    )
    parser.add_argument(
        "--temperature", type=float, default=e.temperature, help="0 = greedy (default %(default)s)"
    )
    parser.add_argument("--top-p", type=float, default=r.top_p, help="nucleus mass (default %(default)s)")
    parser.add_argument("--max-new-tokens", type=int, default=e.max_new_tokens, help="default %(default)s")
    parser.add_argument(
        "--task",
        default=None,
        help="math or qa (task.name: the Solver prompt and the grader; qa benchmark files have question and "
        "answers fields, and F1 is reported); default: the --train-config's task, else math",
    )
    parser.add_argument(
        "--few-shot",
        type=int,
        default=0,
        choices=range(0, 5),
        metavar="{0,4}",
        help="0 = the Solver prompt of training (trained models); 4 = plain-text 4-shot prompt (base models)",
    )
    parser.add_argument(
        "--train-config",
        default=None,
        metavar="CONFIG.yaml",
        help="a training run's config.yaml: its solver.prompt and rollout.open_thinking shape the 0-shot prompt "
        "(default with a checkpoint as --model: RUN/config.yaml above it)",
    )
    parser.add_argument(
        "--open-thinking",
        action="store_true",
        help="append '<think>\\n' to the 0-shot prompt (rollout.open_thinking)",
    )
    parser.add_argument(
        "--backend", default="hf", choices=("hf", "vllm"), help="generation backend (default hf)"
    )
    parser.add_argument("--limit", type=int, default=None, help="only the first N problems of each benchmark")
    parser.add_argument("--seed", type=int, default=0, help="run seed; each problem's seed derives from it")
    parser.add_argument(
        "--data-dir", default=None, help="local benchmark folder (default: shared/benchmarks found upward)"
    )
    parser.add_argument("--out", required=True, help="output directory (reused to resume)")
    parser.add_argument(
        "--dtype", default="float32", choices=("float32", "bfloat16", "float16"), help="model dtype"
    )
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: 1 for models under 50M parameters)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=r.generation_batch_size,
        help="sequences per generation batch (hf backend)",
    )
    parser.add_argument(
        "--problems-per-call",
        type=int,
        default=32,
        help="problems generated together (each with its own seed) and saved together; a killed run "
        "regenerates at most this many on resume",
    )
    parser.add_argument(
        "--max-prompt-tokens", type=int, default=r.max_prompt_tokens, help="left-truncate longer prompts"
    )
    parser.add_argument(
        "--grader-workers", type=int, default=g.workers, help="grader processes (0 = in-process)"
    )
    parser.add_argument(
        "--extract",
        default=None,
        choices=("strict", "flexible"),
        help="answer extraction: strict = the last \\boxed{}, else the grader's fallbacks (the paper's "
        "protocol, what rewards use); flexible = then also the last number in the response "
        "(lm-evaluation-harness's flexible-extract, for few-shot base models) "
        f"(default: eval.extract of --train-config, else {e.extract})",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


# the options passed on to pasodoble.api.evaluate under their own names
OPTIONS = (
    "model", "benchmarks", "out", "role", "samples", "temperature", "top_p", "max_new_tokens", "few_shot",
    "train_config", "open_thinking", "backend", "limit", "seed", "data_dir", "dtype", "device", "threads",
    "batch_size", "problems_per_call", "max_prompt_tokens", "grader_workers", "extract", "task",
)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from pasodoble.api import evaluate

    result = evaluate(**{name: getattr(args, name) for name in OPTIONS}, progress=not args.no_progress)
    print(result.markdown(), end="")
    print(f"wrote {args.out}/results.json, results.md, samples.jsonl")
    return 0
