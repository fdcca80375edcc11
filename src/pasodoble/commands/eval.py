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
import functools
import importlib.util
import math
from pathlib import Path

from pasodoble.config import EvalConfig, GraderConfig, RolloutConfig
from pasodoble.errors import UserError


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


def _check_args(args: argparse.Namespace) -> None:
    from pasodoble.config import MAX_SEED

    if args.samples < 1:
        raise UserError(f"--samples must be >= 1; got {args.samples}")
    if not math.isfinite(args.temperature):  # nan ran and wrote NaN into results.json
        raise UserError(f"--temperature must be a finite number >= 0 (0 = greedy); got {args.temperature}")
    if args.temperature < 0:
        raise UserError(f"--temperature must be >= 0 (0 = greedy); got {args.temperature}")
    if not 0 < args.top_p <= 1:
        raise UserError(f"--top-p must be in (0, 1]; got {args.top_p}")
    if args.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be >= 1; got {args.max_new_tokens}")
    if args.problems_per_call < 1:
        raise UserError(f"--problems-per-call must be >= 1; got {args.problems_per_call}")
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be >= 1; got {args.limit}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1; got {args.batch_size}")
    if args.max_prompt_tokens < 1:
        raise UserError(f"--max-prompt-tokens must be >= 1; got {args.max_prompt_tokens}")
    if args.grader_workers < 0:
        raise UserError(f"--grader-workers must be >= 0; got {args.grader_workers}")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be >= 1; got {args.threads}")
    if not 0 <= args.seed <= MAX_SEED:
        raise UserError(f"--seed must be in 0..{MAX_SEED} (2^32 - 1); got {args.seed}")
    if Path(args.model).expanduser().is_file():
        raise UserError(
            f"--model {args.model} is a file; give a model directory, a Hugging Face name or a training "
            "checkpoint RUN/checkpoints/step_N"
        )
    if args.backend == "vllm" and importlib.util.find_spec("vllm") is None:
        from pasodoble.rollout.vllm.common import missing_extra

        raise missing_extra("--backend vllm", ModuleNotFoundError("No module named 'vllm'"))


def _make_backend(name: str, model, tokenizer, args: argparse.Namespace):
    from pasodoble.config import VLLMConfig
    from pasodoble.rollout import make_backend

    # vllm: one colocated engine built from the loaded model (a checkpoint's weights included); awake
    # throughout (nothing trains beside it)
    return make_backend(
        name,
        model,
        tokenizer,
        generation_batch_size=args.batch_size,
        vllm_cfg=VLLMConfig(sleep_between_steps=False, gpu_memory_utilization=0.5),
        engine_dtype=args.dtype,
        seed=args.seed,
        max_model_len=args.max_prompt_tokens + args.max_new_tokens,
    )


def run(args: argparse.Namespace) -> int:
    from pasodoble.eval.benchmarks import load_benchmark, parse_benchmark_list
    from pasodoble.eval.runner import BackendGenerator, EvalSettings, load_model_for_eval, run_eval
    from pasodoble.export import open_role, resolve
    from pasodoble.rundir import RunLock, check_output_dir
    from pasodoble.verify import Grader

    _check_args(args)
    out = check_output_dir(args.out, inputs={"--model": args.model})
    model_name, train_config, ckpt = args.model, args.train_config, None
    found = resolve(args.model, args.role)
    if found is not None:  # a training checkpoint: its role, verified; the run's config by default
        ckpt = open_role(*found, config=args.train_config)
        model_name, train_config = f"{ckpt.directory}/{ckpt.role}", str(ckpt.config_path)
    elif args.role is not None:
        raise UserError(
            f"--role applies to a training checkpoint (RUN/checkpoints/step_N); {args.model} is not one "
            "(no state.json): drop --role to evaluate it as a model directory or name"
        )
    names = parse_benchmark_list(args.benchmarks)
    benchmarks = [load_benchmark(n, data_dir=args.data_dir, limit=args.limit) for n in names]
    template, open_thinking = None, bool(args.open_thinking)
    extract = args.extract or EvalConfig().extract
    if train_config:
        from pasodoble.config import load_config

        train_cfg = load_config(train_config)
        template, open_thinking = train_cfg.solver.prompt, open_thinking or train_cfg.rollout.open_thinking
        extract = args.extract or train_cfg.eval.extract
    settings = EvalSettings(
        model=model_name,
        benchmarks=[b.name for b in benchmarks],
        samples=args.samples,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        few_shot=args.few_shot,
        solver_prompt=template,
        open_thinking=open_thinking,
        backend=args.backend,
        seed=args.seed,
        limit=args.limit,
        data_dir=args.data_dir,
        extract=extract,
    )
    model, tokenizer = load_model_for_eval(
        args.model,
        seed=args.seed,
        dtype=args.dtype,
        device=args.device,
        threads=args.threads,
        checkpoint=ckpt,
    )
    backend = _make_backend(args.backend, model, tokenizer, args)
    generator = BackendGenerator(
        backend,
        tokenizer,
        few_shot=args.few_shot,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        max_prompt_tokens=args.max_prompt_tokens,
        template=template,
        open_thinking=open_thinking,
    )
    # one evaluation at a time per --out (two appended the same rows to samples.jsonl); writes nothing
    with RunLock(out, field="--out"), Grader(GraderConfig(workers=args.grader_workers)) as grader:
        results = run_eval(
            settings,
            benchmarks,
            generator,
            functools.partial(grader.grade_batch, extract=extract),
            args.out,
            problems_per_call=args.problems_per_call,
            progress=not args.no_progress,
        )
    from pasodoble.eval.report import results_markdown

    print(results_markdown(results), end="")
    print(f"wrote {args.out}/results.json, results.md, samples.jsonl")
    return 0
