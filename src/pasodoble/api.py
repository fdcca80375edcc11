"""The Python API: what a notebook or a script calls, and what the command line is a thin layer over.

    import pasodoble as pd

    cfg = pd.load_config("configs/toy.yaml", overrides=["run.max_steps=2", "run.out_dir=runs/nb"])
    result = pd.train(cfg, overwrite=True)       # TrainResult(steps=2, updates=2, skips=0, ...)
    pd.resume(result.run_dir, ["run.max_steps=4"])
    pd.export(result.run_dir / "checkpoints/step_00000004", "solver", "models/solver-4")
    pd.evaluate("models/solver-4", "gsm8k", out="runs/nb-eval", limit=20)

Every entry checks its configuration first, as ``pasodoble train`` does: ``train`` runs ``validate`` on the
config it is given, so a ``Config`` built or changed in Python (``cfg.grpo.loss_type = "ppo"``,
``cfg.solver.group_size = 1``) is refused with a one-line ``ConfigError`` before any model loads. Bad
inputs (paths, checkpoints, options) raise ``UserError``; both carry the message the command line prints.
The return values are small frozen dataclasses (``TrainResult``, ``EvalResult``, ``ExportResult``).
Nothing here imports torch until it is called. Reference: docs/python-api.md.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import math
import os
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

from pasodoble.config import Config, ConfigError, EvalConfig, GraderConfig, RolloutConfig, load_config
from pasodoble.config import validate as validate_fields
from pasodoble.errors import UserError

__all__ = [
    "EvalResult",
    "ExportResult",
    "TrainResult",
    "evaluate",
    "export",
    "grade",
    "load_config",
    "resume",
    "train",
    "validate",
]

PathLike = str | os.PathLike[str]


# --------------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class TrainResult:
    """What a finished (or stopped) training run did.

    ``steps``: steps done, skipped ones included (offline runs count Proposer and Solver steps);
    ``updates``: steps that trained at least one role; ``skips``: steps that trained neither (no valid
    question, no usable group); ``interrupted``: stopped by SIGINT/SIGTERM after writing a checkpoint
    (continue with ``resume``); ``run_dir``: the run directory (config.yaml, metrics.jsonl, rollouts.jsonl,
    checkpoints/, and ``proposer_final/``, ``solver_final/`` unless interrupted).
    """

    steps: int
    updates: int
    skips: int
    interrupted: bool
    run_dir: Path

    def summary(self) -> dict[str, Any]:
        """The JSON line ``pasodoble train`` prints: steps, updates, skips, interrupted."""
        return {
            "steps": self.steps,
            "updates": self.updates,
            "skips": self.skips,
            "interrupted": self.interrupted,
        }


@dataclass(frozen=True)
class EvalResult:
    """One evaluation: ``benchmarks`` maps each benchmark to its metrics (``pass@1``, the mean over the k
    samples; ``maj@k``; ``pass@k``; ``k``; ``n``), ``average`` holds their unweighted means, ``out_dir``
    the files written (results.json, results.md, samples.jsonl) and ``results`` all of results.json."""

    out_dir: Path
    benchmarks: dict[str, dict[str, Any]]
    average: dict[str, float]
    results: dict[str, Any]

    @property
    def pass_at_1(self) -> float:
        """The average pass@1 over the benchmarks (what the paper's tables report)."""
        return float(self.average["pass@1"])

    def markdown(self) -> str:
        """The results table (results.md): pass@1, maj@k, pass@k per benchmark and their average."""
        from pasodoble.eval.report import results_markdown

        return results_markdown(self.results)


@dataclass(frozen=True)
class ExportResult:
    """An exported role: ``out_dir`` loads with ``AutoModelForCausalLM.from_pretrained``; ``checkpoint``,
    ``role``, ``step`` and ``layout`` (none, ddp, fsdp2, deepspeed_zero2) say where it came from, and
    ``lora_merged`` whether LoRA adapters were merged into the base model."""

    out_dir: Path
    checkpoint: Path
    role: str
    step: int
    layout: str
    lora_merged: bool


# --------------------------------------------------------------------------------------------------
# Configuration


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True  # validate_fields names a non-finite float
    return type(a) is type(b) and a == b


def _check_types(obj: Any, prefix: str) -> None:
    """Every section of the right class, every field of its annotated type (an ``int`` is taken for a
    ``float`` field and converted in place, as a YAML file's ``0`` is)."""
    from pasodoble.config import _coerce  # the coercion a YAML file and an override go through

    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        name, value, default = f"{prefix}{f.name}", getattr(obj, f.name), None
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        if dataclasses.is_dataclass(default):
            if type(value) is not type(default):
                raise ConfigError(
                    f"{name} is a section: it must be a pasodoble.config.{type(default).__name__}; got "
                    f"{type(value).__name__} (set its fields, e.g. cfg.{name}.FIELD = VALUE)"
                )
            _check_types(value, f"{name}.")
            continue
        coerced = _coerce(value, hints[f.name], name)  # ConfigError for what no file could hold either
        if _same(coerced, value):
            continue
        if isinstance(coerced, float) and isinstance(value, int) and not isinstance(value, bool):
            setattr(obj, f.name, coerced)
            continue
        raise ConfigError(
            f"{name} must be of type {_type_name(hints[f.name])}; got {value!r} ({type(value).__name__})"
        )


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def validate(cfg: Config) -> Config:
    """Check ``cfg`` as ``pasodoble train`` checks a config file and its overrides; return it.

    Every section must be its ``pasodoble.config`` class and every field of its declared type (``2`` for
    a float field becomes ``2.0``; ``"2"`` for an int field is refused: a file's text is converted when
    it is read, a Python value is not); then each field's range and the cross-field rules
    (``pasodoble.config.validate``). Raises ``ConfigError`` naming the first field to change.
    """
    if not isinstance(cfg, Config):
        raise ConfigError(
            f"expected a pasodoble.Config; got {type(cfg).__name__} (build one with pd.load_config(...) or "
            "pd.Config())"
        )
    _check_types(cfg, "")
    validate_fields(cfg)
    return cfg


def _config(config: Config | PathLike, overrides: Sequence[str]) -> Config:
    """A validated config: loaded from a YAML path, or a copy of ``config`` with ``overrides`` applied."""
    if isinstance(overrides, str):
        raise ConfigError(
            f"overrides must be a list of section.field=value strings; got the string {overrides!r}"
        )
    if not isinstance(config, Config):
        return load_config(config, list(overrides))
    cfg = validate(copy.deepcopy(config))
    if overrides:
        from pasodoble.config import apply_overrides

        apply_overrides(cfg, list(overrides))
    return cfg


# --------------------------------------------------------------------------------------------------
# Training


def train(
    config: Config | PathLike, overrides: Sequence[str] = (), *, overwrite: bool = False
) -> TrainResult:
    """Run dual-play training (``pasodoble train CONFIG [overrides] [--overwrite]``).

    ``config``: a ``Config`` (used as given; it is not changed) or a YAML path. ``overrides``:
    ``section.field=value`` strings applied on top. The run goes to ``run.out_dir``, which must be new
    or empty; ``overwrite=True`` first deletes an earlier run there (only what a run writes). The config
    is validated before anything loads (``validate``); the placement and memory check follows, then the
    models load. A first SIGINT/SIGTERM ends the current step, writes a checkpoint and returns with
    ``interrupted=True``. Under ``torchrun`` every process calls it and gets the same result.
    """
    cfg = _config(config, overrides)
    from pasodoble.train import run_training

    summary = run_training(cfg, overwrite=overwrite)
    return TrainResult(**summary, run_dir=Path(cfg.run.out_dir))


def resume(run_dir: PathLike, overrides: Sequence[str] = ()) -> TrainResult:
    """Continue the run in ``run_dir`` from its newest complete checkpoint (``pasodoble train --resume``).

    The run's own ``config.yaml`` is used; ``overrides`` may change only how it runs (``run.max_steps``,
    logging, checkpoint cadence, ``eval.*``, ...), not what it computes: the result is bitwise identical
    to an uninterrupted run. A refused override is a ``ConfigError`` naming it.
    """
    if isinstance(overrides, str):
        raise ConfigError(
            f"overrides must be a list of section.field=value strings; got the string {overrides!r}"
        )
    from pasodoble.train import resume_training

    summary = resume_training(run_dir, list(overrides))
    return TrainResult(**summary, run_dir=Path(run_dir).expanduser())


# --------------------------------------------------------------------------------------------------
# Evaluation


def _check_eval_options(o: dict[str, Any]) -> None:
    """The options' ranges; messages name the command-line option (``--max-new-tokens``)."""
    from pasodoble.config import MAX_SEED

    def at_least(name: str, low: int) -> None:
        if o[name] < low:
            raise UserError(f"--{name.replace('_', '-')} must be >= {low}; got {o[name]}")

    at_least("samples", 1)
    if not math.isfinite(o["temperature"]):  # nan ran and wrote NaN into results.json
        raise UserError(f"--temperature must be a finite number >= 0 (0 = greedy); got {o['temperature']}")
    if o["temperature"] < 0:
        raise UserError(f"--temperature must be >= 0 (0 = greedy); got {o['temperature']}")
    if not 0 < o["top_p"] <= 1:
        raise UserError(f"--top-p must be in (0, 1]; got {o['top_p']}")
    at_least("max_new_tokens", 1)
    at_least("problems_per_call", 1)
    if o["limit"] is not None:
        at_least("limit", 1)
    at_least("batch_size", 1)
    at_least("max_prompt_tokens", 1)
    at_least("grader_workers", 0)
    if o["threads"] is not None:
        at_least("threads", 1)
    if not 0 <= o["seed"] <= MAX_SEED:
        raise UserError(f"--seed must be in 0..{MAX_SEED} (2^32 - 1); got {o['seed']}")
    if o["few_shot"] not in range(5):
        raise UserError(
            f"--few-shot must be 0 (the training prompt) to 4 (plain-text shots); got {o['few_shot']}"
        )
    if Path(o["model"]).expanduser().is_file():
        raise UserError(
            f"--model {o['model']} is a file; give a model directory, a Hugging Face name or a training "
            "checkpoint RUN/checkpoints/step_N"
        )
    if o["backend"] not in ("hf", "vllm"):
        raise UserError(f"--backend must be hf or vllm; got {o['backend']!r}")
    if o["backend"] == "vllm" and importlib.util.find_spec("vllm") is None:
        from pasodoble.rollout.vllm.common import missing_extra

        raise missing_extra("--backend vllm", ModuleNotFoundError("No module named 'vllm'"))


_E, _R, _G = EvalConfig(), RolloutConfig(), GraderConfig()


def evaluate(
    model: str,
    benchmarks: str | Sequence[str] = "paper",
    *,
    out: PathLike,
    role: str | None = None,
    samples: int = _E.samples,
    temperature: float = _E.temperature,
    top_p: float = _R.top_p,
    max_new_tokens: int = _E.max_new_tokens,
    few_shot: int = 0,
    train_config: PathLike | None = None,
    open_thinking: bool = False,
    backend: str = "hf",
    limit: int | None = None,
    seed: int = 0,
    data_dir: PathLike | None = None,
    dtype: str = "float32",
    device: str = "auto",
    threads: int | None = None,
    batch_size: int = _R.generation_batch_size,
    problems_per_call: int = 32,
    max_prompt_tokens: int = _R.max_prompt_tokens,
    grader_workers: int = _G.workers,
    extract: str | None = None,
    task: str | None = None,
    progress: bool = True,
) -> EvalResult:
    """Evaluate a model on benchmarks: pass@1 over ``samples`` samples, maj@k and pass@k (``pasodoble eval``).

    ``model``: a model directory, a Hugging Face name, ``"tiny"``, or a training checkpoint
    ``RUN/checkpoints/step_N`` with ``role`` (``"solver"`` or ``"proposer"``), whose run's config.yaml is
    then the default ``train_config``. ``benchmarks``: registry names or JSONL paths, as a list or a
    comma-separated string (``"paper"`` = the paper's six). Results go to ``out`` (results.json,
    results.md, samples.jsonl); calling again with the same arguments continues an interrupted
    evaluation. The keyword options are ``pasodoble eval``'s, under the same names (``--max-new-tokens``
    is ``max_new_tokens``); errors name the command-line option. docs/evaluation.md has the protocol.
    """
    model, out = str(model), str(out)
    options = dict(locals())
    _check_eval_options(options)
    from pasodoble.eval import runner
    from pasodoble.eval.benchmarks import load_benchmark, parse_benchmark_list
    from pasodoble.export import open_role, resolve
    from pasodoble.rundir import RunLock, check_output_dir
    from pasodoble.tasks import get_task

    data_dir = None if data_dir is None else str(data_dir)
    train_config = None if train_config is None else str(train_config)
    check_output_dir(out, inputs={"--model": model})
    model_name, ckpt = model, None
    found = resolve(model, role)
    if found is not None:  # a training checkpoint: its role, verified; the run's config by default
        ckpt = open_role(*found, config=train_config)
        model_name, train_config = f"{ckpt.directory}/{ckpt.role}", str(ckpt.config_path)
    elif role is not None:
        raise UserError(
            f"--role applies to a training checkpoint (RUN/checkpoints/step_N); {model} is not one "
            "(no state.json): drop --role to evaluate it as a model directory or name"
        )
    names = parse_benchmark_list(benchmarks if isinstance(benchmarks, str) else ",".join(benchmarks))
    loaded = [load_benchmark(n, data_dir=data_dir, limit=limit) for n in names]
    template, thinking, extract_mode = None, bool(open_thinking), extract or EvalConfig().extract
    task_name = task
    if train_config:
        train_cfg = load_config(train_config)
        template, thinking = train_cfg.solver.prompt, thinking or train_cfg.rollout.open_thinking
        extract_mode = extract or train_cfg.eval.extract
        task_name = task_name or train_cfg.task.name
    task_name = task_name or "math"
    try:
        the_task = get_task(task_name)
    except ConfigError as exc:
        raise UserError(f"--task: {str(exc).removeprefix('task.name')}") from None
    if template is None and task_name != "math":
        template = the_task.solver_template
    settings = runner.EvalSettings(
        model=model_name,
        benchmarks=[b.name for b in loaded],
        samples=samples,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        few_shot=few_shot,
        solver_prompt=template,
        open_thinking=thinking,
        backend=backend,
        seed=seed,
        limit=limit,
        data_dir=data_dir,
        extract=extract_mode,
        task=task_name,
    )
    loaded_model, tokenizer = runner.load_model_for_eval(
        model, seed=seed, dtype=dtype, device=device, threads=threads, checkpoint=ckpt
    )
    generator = runner.BackendGenerator(
        _eval_backend(backend, loaded_model, tokenizer, options),
        tokenizer,
        few_shot=few_shot,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        max_prompt_tokens=max_prompt_tokens,
        template=template,
        open_thinking=thinking,
    )
    # one evaluation at a time per out (two appended the same rows to samples.jsonl); writes nothing
    with (
        RunLock(Path(out), field="--out"),
        the_task.make_grader(GraderConfig(workers=grader_workers)) as grader,
    ):

        def grade_fn(texts, golds):
            return grader.grade_batch(texts, golds, extract=extract_mode)

        results = runner.run_eval(
            settings, loaded, generator, grade_fn, out, problems_per_call=problems_per_call, progress=progress
        )
    return EvalResult(Path(out), results["benchmarks"], results["average"], results)


def _eval_backend(name: str, model, tokenizer, o: dict[str, Any]):
    from pasodoble.config import VLLMConfig
    from pasodoble.rollout import make_backend

    # vllm: one colocated engine built from the loaded model (a checkpoint's weights included); awake
    # throughout (nothing trains beside it)
    return make_backend(
        name,
        model,
        tokenizer,
        generation_batch_size=o["batch_size"],
        vllm_cfg=VLLMConfig(sleep_between_steps=False, gpu_memory_utilization=0.5),
        engine_dtype=o["dtype"],
        seed=o["seed"],
        max_model_len=o["max_prompt_tokens"] + o["max_new_tokens"],
    )


# --------------------------------------------------------------------------------------------------
# Export


def export(
    checkpoint: PathLike,
    role: str,
    out: PathLike,
    *,
    dtype: str = "float32",
    train_config: PathLike | None = None,
    adapter_only: bool = False,
) -> ExportResult:
    """Write one role of a training checkpoint as a Hugging Face model directory (``pasodoble export``).

    ``checkpoint``: ``RUN/checkpoints/step_N`` (any layout: one process, DDP, FSDP2, DeepSpeed ZeRO-2;
    LoRA adapters are merged). Its files are checked against their recorded sha256 first; the model's
    config and tokenizer come from the role's starting model in the run's config.yaml (``train_config``
    overrides where it is looked for). ``out`` must be new or empty; ``dtype``: float32 (the master
    weights exactly) or bfloat16.
    """
    from pasodoble.export import export_role, open_role, resolve, run_directory_hint
    from pasodoble.rundir import check_writable

    if dtype not in ("float32", "bfloat16"):
        raise UserError(f"--dtype must be float32 or bfloat16; got {dtype!r}")
    check_writable(Path(out).expanduser(), "--out")
    found = resolve(str(checkpoint), role)
    if found is None:
        raise UserError(
            run_directory_hint(checkpoint)
            or f"{checkpoint} is not a training checkpoint (no state.json); give RUN/checkpoints/step_N"
        )
    ckpt = open_role(found[0], found[1], config=train_config)
    written = export_role(
        ckpt, out, dtype=dtype, adapter_only=adapter_only
    )  # LoRA: peft's adapter files only
    return ExportResult(
        written, ckpt.directory, ckpt.role, ckpt.step, ckpt.layout, ckpt.lora and not adapter_only
    )


# --------------------------------------------------------------------------------------------------
# Grading


if typing.TYPE_CHECKING:
    from pasodoble.verify import Verdict


@overload
def grade(
    responses: str, golds: str, *, extracted: bool = ..., extract: str = ..., config: Config | None = ...
) -> Verdict: ...
@overload
def grade(
    responses: Sequence[str],
    golds: Sequence[str],
    *,
    extracted: bool = ...,
    extract: str = ...,
    config: Config | None = ...,
) -> list[Verdict]: ...
def grade(responses, golds, *, extracted=False, extract="strict", config=None):
    """Grade responses against gold answers, as rewards and evaluation do (``pasodoble grade``).

    One response and one gold answer give one ``Verdict`` (``pred``, ``correct``, ``reason``); two
    sequences of equal length give a list, in order. ``extracted=True``: the responses are final answers
    already (no extraction). ``extract``: ``strict`` (the last ``\\boxed{}``, else the grader's
    fallbacks: what rewards use) or ``flexible`` (then also the last number). ``config``: its task's
    grader (``task.name``: math's ``Verdict``; qa's verdicts also carry an F1 ``score``) with its
    ``grader`` section (time bound, workers, fallbacks); the math grader with the defaults otherwise.
    Each math check is time-bounded in a worker process (``grader.workers``; 0 grades in this process
    without a hard bound).
    """
    from pasodoble.tasks import get_task

    single = isinstance(responses, str)
    if single != isinstance(golds, str):
        raise TypeError("grade: give one response and one gold answer, or two sequences of equal length")
    if config is not None:
        validate(config)
    task = get_task(config.task.name if config is not None else "math")
    with task.make_grader(config.grader if config is not None else GraderConfig()) as grader:
        verdicts = grader.grade_batch(
            [responses] if single else list(responses),
            [golds] if single else list(golds),
            extracted=extracted,
            extract=extract,
        )
    return verdicts[0] if single else verdicts
