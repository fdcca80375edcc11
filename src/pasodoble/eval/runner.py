"""The evaluation loop: generate k samples per problem, grade them, append them, score the benchmarks.

``run_eval`` takes the generator and the grader as arguments (the CLI passes the real model backend
and ``verify.Grader``; tests pass fakes), so the loop, the resume logic and the metrics are tested
without a model.

Resumability. ``OUT/samples.jsonl`` gets the k graded samples of a problem appended and flushed as
soon as that problem is finished. On restart the completed (benchmark, problem id) pairs are read
back and not generated again; a torn last line or a problem with fewer than k samples (a kill
mid-write) is dropped and regenerated. Each problem's sampling seed is derived from
(seed, benchmark, problem id) only, so the final numbers do not depend on where a run was interrupted.
``OUT/eval_config.json`` records the generation settings; rerunning into the same directory with a
different model or settings is a UserError, as is a benchmark whose problems or answers changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pasodoble.errors import UserError
from pasodoble.eval.benchmarks import Benchmark, Problem
from pasodoble.eval.metrics import average_metrics, benchmark_metrics, score_problem

SAMPLES_FILE = "samples.jsonl"
CONFIG_FILE = "eval_config.json"
RESULTS_FILE = "results.json"
RESULTS_MD = "results.md"

# Settings that determine the samples: a resumed run must agree on all of them.
IDENTITY_KEYS = (
    "task",
    "model",
    "samples",
    "temperature",
    "top_p",
    "max_new_tokens",
    "few_shot",
    "solver_prompt",
    "open_thinking",
    "backend",
    "seed",
    "extract",  # not a generation setting, but the stored verdicts were graded with it
)
# the value of an identity key in a manifest written before the key existed
_IDENTITY_DEFAULTS = {"extract": "strict", "task": "math"}


@dataclass
class EvalSettings:
    """What one evaluation run generates with (recorded in the manifest)."""

    model: str
    benchmarks: list[str]
    samples: int = 6
    temperature: float = 0.6
    top_p: float = 1.0
    max_new_tokens: int = 1024
    few_shot: int = 0
    solver_prompt: str | None = None  # solver.prompt of the training config; None = built-in
    open_thinking: bool = False  # rollout.open_thinking of the training config
    backend: str = "hf"
    seed: int = 0
    limit: int | None = None
    data_dir: str | None = None
    extract: str = "strict"  # answer extraction the verdicts used: strict | flexible (eval.extract)
    task: str = "math"  # task.name: its Solver prompt and grader

    def identity(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in IDENTITY_KEYS}


@dataclass(frozen=True)
class GenerationRequest:
    """One problem to sample from: the generator builds the prompt and samples n responses with ``seed``."""

    benchmark: str
    problem_id: str
    problem: str
    seed: int


@dataclass
class GeneratedSample:
    """One response; ``finish_reason`` ('eos' | 'length') and ``num_tokens`` when the backend knows them."""

    text: str
    finish_reason: str | None = None
    num_tokens: int | None = None


class Generator(Protocol):
    def __call__(self, requests: list[GenerationRequest], n: int) -> list[list[GeneratedSample | str]]:
        """n responses per request, in request order; deterministic given each request's seed."""
        ...


class VerdictLike(Protocol):
    pred: str | None
    correct: bool
    reason: str | None


GradeFn = Callable[[list[str], list[str]], Sequence[VerdictLike]]


def problem_seed(seed: int, benchmark: str, problem_id: str) -> int:
    """A 31-bit sampling seed that depends only on (run seed, benchmark, problem id)."""
    digest = hashlib.sha256(f"{seed}\x00{benchmark}\x00{problem_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def sample_id(benchmark: str, problem_id: str, index: int) -> str:
    return f"{benchmark}/{problem_id}#{index}"


# --------------------------------------------------------------------------------------------------
# samples.jsonl: reading back finished problems


@dataclass
class _Completed:
    rows: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    dropped_lines: int = 0


def read_samples(path: Path, k: int) -> _Completed:
    """Completed problems of ``samples.jsonl``: (benchmark, problem_id) -> its k rows in sample order.

    Lines that do not parse (a torn write) and problems with fewer than k distinct samples are dropped.
    """
    done = _Completed()
    if not path.exists():
        return done
    groups: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    total = 0
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            total += 1
            try:
                row = json.loads(line)
                key = (str(row["benchmark"]), str(row["problem_id"]))
                index = int(row["sample"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
            groups.setdefault(key, {})[index] = row
    kept = 0
    for key, by_index in groups.items():
        if all(i in by_index for i in range(k)):
            done.rows[key] = [by_index[i] for i in range(k)]
            kept += len(by_index)
    done.dropped_lines = total - kept
    return done


def _rewrite_samples(path: Path, rows: dict[tuple[str, str], list[dict[str, Any]]]) -> None:
    """Replace samples.jsonl by the completed problems only (atomic rename)."""
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for group in rows.values():
            for row in group:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def _check_identity(out: Path, settings: EvalSettings) -> None:
    path = out / CONFIG_FILE
    if path.exists():
        try:
            previous = json.loads(path.read_text())
        except json.JSONDecodeError:
            raise UserError(f"{path} is not valid JSON; remove it or use a new --out") from None
        stored = {**_IDENTITY_DEFAULTS, **previous.get("identity", {})}
        diff = [k for k in IDENTITY_KEYS if stored.get(k) != settings.identity().get(k)]
        if diff:
            what = ", ".join(f"{k}: {stored.get(k)!r} -> {settings.identity().get(k)!r}" for k in diff)
            raise UserError(
                f"{out} holds an evaluation with different settings ({what}); use a new --out or the same settings"
            )
    elif (out / SAMPLES_FILE).exists():
        raise UserError(f"{out / SAMPLES_FILE} exists without {CONFIG_FILE}; use a new --out")
    payload = {"identity": settings.identity(), "settings": asdict(settings)}
    path.write_text(json.dumps(payload, indent=2) + "\n")


def _check_same_problem(row: dict[str, Any], problem: Problem, bench: str, out: Path) -> None:
    if row.get("gold") != problem.answer or row.get("problem") != problem.problem:
        raise UserError(
            f"{out / SAMPLES_FILE} was generated from another version of benchmark '{bench}' "
            f"(problem '{problem.id}' or its answer differs); use a new --out"
        )


# --------------------------------------------------------------------------------------------------
# Metrics from sample rows (shared by the runner and by anyone re-grading samples.jsonl)


def metrics_from_samples(
    rows: Sequence[dict[str, Any]], selection: dict[str, list[str]] | None = None
) -> dict[str, dict[str, float | int]]:
    """Per-benchmark metrics from sample rows (fields ``benchmark``, ``problem_id``, ``sample``,
    ``pred``, ``correct``). ``selection`` (benchmark -> problem ids, in order) restricts and orders the
    problems; without it every problem in ``rows`` counts, benchmarks in order of first appearance."""
    grouped: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for row in rows:
        grouped.setdefault(str(row["benchmark"]), {}).setdefault(str(row["problem_id"]), []).append(row)
    if selection is None:
        selection = {b: list(problems) for b, problems in grouped.items()}
    result: dict[str, dict[str, float | int]] = {}
    for bench, ids in selection.items():
        scores, f1s = [], []
        for pid in ids:
            group = sorted(grouped.get(bench, {}).get(pid, []), key=lambda r: int(r["sample"]))
            if not group:
                raise ValueError(f"no samples for {bench}/{pid}")
            scores.append(score_problem([r.get("pred") for r in group], [bool(r["correct"]) for r in group]))
            if all(r.get("score") is not None for r in group):  # graders with a graded score (QA's F1)
                f1s.append(sum(float(r["score"]) for r in group) / len(group))
        result[bench] = benchmark_metrics(scores)
        if f1s and len(f1s) == len(ids):
            result[bench]["f1"] = sum(f1s) / len(f1s)
    return result


def package_versions() -> dict[str, str | None]:
    from importlib import metadata

    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("pasodoble", "torch", "transformers", "datasets", "math-verify", "vllm"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


# --------------------------------------------------------------------------------------------------
# The loop


def run_eval(
    settings: EvalSettings,
    benchmarks: list[Benchmark],
    generate: Generator,
    grade: GradeFn,
    out_dir: str | os.PathLike[str],
    *,
    problems_per_call: int = 32,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate, resuming from ``out_dir`` when it holds a partial run; write and return results.json."""
    from tqdm.auto import tqdm

    from pasodoble.eval.report import results_markdown

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_identity(out, settings)
    k = settings.samples
    samples_path = out / SAMPLES_FILE
    completed = read_samples(samples_path, k)
    if completed.dropped_lines:
        print(
            f"pasodoble eval: dropping {completed.dropped_lines} incomplete sample line(s) from {samples_path}",
            file=sys.stderr,
        )
        _rewrite_samples(samples_path, completed.rows)

    pending: list[tuple[Benchmark, Problem]] = []
    for bench in benchmarks:
        for problem in bench.problems:
            rows = completed.rows.get((bench.name, problem.id))
            if rows is None:
                pending.append((bench, problem))
            else:
                _check_same_problem(rows[0], problem, bench.name, out)
    total = sum(len(b.problems) for b in benchmarks)
    start = time.time()
    bar = tqdm(
        total=total,
        initial=total - len(pending),
        desc="eval",
        unit="problem",
        disable=not progress,
        dynamic_ncols=True,
    )
    with samples_path.open("a", encoding="utf-8") as fh:
        for lo in range(0, len(pending), problems_per_call):
            chunk = pending[lo : lo + problems_per_call]
            requests = [
                GenerationRequest(b.name, p.id, p.problem, problem_seed(settings.seed, b.name, p.id))
                for b, p in chunk
            ]
            outputs = generate(requests, k)
            if len(outputs) != len(chunk) or any(len(o) != k for o in outputs):
                raise RuntimeError("generator returned the wrong number of responses")
            samples = [
                [s if isinstance(s, GeneratedSample) else GeneratedSample(str(s)) for s in o] for o in outputs
            ]
            verdicts = grade(
                [s.text for o in samples for s in o], [p.answer for _, p in chunk for _ in range(k)]
            )
            for j, ((bench, problem), req) in enumerate(zip(chunk, requests, strict=True)):
                rows = []
                for i, sample in enumerate(samples[j]):
                    v = verdicts[j * k + i]
                    rows.append(
                        {
                            "id": sample_id(bench.name, problem.id, i),
                            "benchmark": bench.name,
                            "problem_id": problem.id,
                            "sample": i,
                            "seed": req.seed,
                            "problem": problem.problem,
                            "gold": problem.answer,
                            "response": sample.text,
                            "pred": v.pred,
                            "correct": bool(v.correct),
                            "reason": v.reason,
                            **({"score": float(v.score)} if getattr(v, "score", None) is not None else {}),
                            "finish_reason": sample.finish_reason,
                            "num_tokens": sample.num_tokens,
                        }
                    )
                fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
                fh.flush()
                completed.rows[(bench.name, problem.id)] = rows
                bar.update(1)
    bar.close()

    selection = {b.name: [p.id for p in b.problems] for b in benchmarks}
    all_rows = [r for rows in completed.rows.values() for r in rows]
    per_bench = metrics_from_samples(all_rows, selection)
    results = {
        "model": settings.model,
        "config": asdict(settings),
        "seed": settings.seed,
        "versions": package_versions(),
        "datasets": {
            b.name: {"source": b.source, "n": len(b.problems), "sha256": b.sha256} for b in benchmarks
        },
        "display_names": {b.name: b.display for b in benchmarks},
        "benchmarks": per_bench,
        "average": {
            **average_metrics(per_bench),
            **(
                {"f1": sum(b["f1"] for b in per_bench.values()) / len(per_bench)}
                if per_bench and all("f1" in b for b in per_bench.values())
                else {}
            ),
        },
        "generated_problems": len(pending),
        "reused_problems": total - len(pending),
        "elapsed_s": round(time.time() - start, 3),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    tmp = out / (RESULTS_FILE + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, out / RESULTS_FILE)
    (out / RESULTS_MD).write_text(results_markdown(results))
    return results


# --------------------------------------------------------------------------------------------------
# The real generator: a model behind a rollout backend


def load_model_for_eval(
    name_or_path: str,
    *,
    seed: int = 0,
    dtype: str = "float32",
    device: str = "auto",
    threads: int | None = None,
    role: str | None = None,
    train_config: str | None = None,
    checkpoint: Any = None,
):
    """(model, tokenizer) in eval mode on ``device`` ('auto' = cuda if available).

    ``name_or_path`` is a Hugging Face name or directory (``pasodoble.models``), or a training
    checkpoint: ``RUN/checkpoints/step_N`` with ``role`` ('proposer' or 'solver'), or
    ``RUN/checkpoints/step_N/ROLE``; its files are verified and its weights loaded into the role's
    starting model named in the run's config.yaml (``train_config`` overrides where that is found;
    see ``pasodoble.export``). ``role`` with anything but a checkpoint is a ``UserError``.
    ``checkpoint``: an ``export.RoleCheckpoint`` already opened (and verified) by the caller.

    On CPU, ``threads`` sets torch's intra-op threads; None picks 1 for models under 50 M parameters,
    whose small matrix products gain nothing from more threads and slow down many-fold when other
    processes share the cores, and leaves torch's default otherwise.
    """
    import torch

    from pasodoble.config import ModelConfig
    from pasodoble.export import load_role_model, open_role, resolve, run_directory_hint
    from pasodoble.models import load_model_and_tokenizer, set_cpu_threads, torch_dtype

    found = resolve(name_or_path, role) if checkpoint is None else None
    if found is not None:
        checkpoint = open_role(*found, config=train_config)
    if checkpoint is not None:
        model, tokenizer = load_role_model(checkpoint)
        model.to(torch_dtype(dtype))
    elif role is not None:
        raise UserError(
            f"--role applies to a training checkpoint (RUN/checkpoints/step_N); {name_or_path} is not one "
            "(no state.json): drop --role to evaluate it as a model directory or name"
        )
    elif run_directory_hint(name_or_path):
        raise UserError(run_directory_hint(name_or_path))
    else:
        model, tokenizer = load_model_and_tokenizer(
            name_or_path, ModelConfig(name_or_path=name_or_path, dtype=dtype), seed=seed
        )
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    set_cpu_threads(model, threads)
    model.eval()
    return model, tokenizer


class BackendGenerator:
    """``Generator`` over a rollout backend: builds each problem's prompt, samples n with its own seed.

    One backend call per batch of problems with one seed per problem (``SamplingParams.seeds``): every
    problem's samples are drawn from its own random stream, so they do not depend on which problems
    share the call (up to floating-point differences of the batch shape in the model's logits).
    """

    def __init__(
        self,
        backend: Any,
        tokenizer: Any,
        *,
        few_shot: int,
        temperature: float,
        top_p: float,
        max_new_tokens: int,
        max_prompt_tokens: int | None = None,
        template: str | None = None,
        open_thinking: bool = False,
    ) -> None:
        self.template = template
        self.open_thinking = open_thinking
        self.backend = backend
        self.tokenizer = tokenizer
        self.few_shot = few_shot
        self.temperature = temperature
        self.top_p = top_p
        self.max_new_tokens = max_new_tokens
        self.max_prompt_tokens = max_prompt_tokens

    def __call__(self, requests: list[GenerationRequest], n: int) -> list[list[GeneratedSample]]:
        from pasodoble.eval.prompts import eval_prompt_ids, postprocess_response
        from pasodoble.rollout.base import SamplingParams

        prompts = []
        for req in requests:
            ids = eval_prompt_ids(
                self.tokenizer,
                req.problem,
                self.few_shot,
                template=self.template,
                open_thinking=self.open_thinking,
            )
            if self.max_prompt_tokens is not None and len(ids) > self.max_prompt_tokens:
                ids = ids[-self.max_prompt_tokens :]
            prompts.append(ids)
        seeds = tuple(req.seed for req in requests)
        if self.temperature > 0:
            params = SamplingParams(
                temperature=self.temperature,
                top_p=self.top_p,
                max_new_tokens=self.max_new_tokens,
                n=n,
                seeds=seeds,
            )
        else:  # greedy: top-1 sampling at temperature 1
            params = SamplingParams(
                temperature=1.0, top_k=1, max_new_tokens=self.max_new_tokens, n=n, seeds=seeds
            )
        out = []
        for completions in self.backend.generate(prompts, params):
            out.append(
                [
                    GeneratedSample(
                        postprocess_response(c.text, self.few_shot), c.finish_reason, len(c.completion_ids)
                    )
                    for c in completions
                ]
            )
        return out
