"""Plug-ins: the user's own code named by import path (``module:attr``) in the config (docs/plugins.md).

| config field | what it names | signature |
| --- | --- | --- |
| ``rewards.solver_reward`` | the Solver's reward | ``SolverReward`` |
| ``rewards.proposer_reward`` | the Proposer's reward | ``ProposerReward`` |
| ``task.name`` | a whole task: prompts, parsing, validity, grader | ``tasks.Task`` |
| ``run.callbacks`` | functions called after each step and at each checkpoint | ``StepCallback`` |

Prompt templates come from files with ``proposer.prompt_file`` / ``solver.prompt_file``.

Every plug-in is imported when the config is validated, so a misspelled path is a one-line
``ConfigError`` before any model loads. A plug-in must be deterministic given its arguments (the ``rng``
it receives is seeded from ``run.seed`` and the step): bitwise resume replays it.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pasodoble.config import ConfigError
from pasodoble.types import ParseFailure, Question


def is_plugin_path(value: str) -> bool:
    """``module:attr`` (a dotted module, a colon, a dotted attribute)."""
    module, sep, attr = str(value).partition(":")
    return bool(
        sep and module and attr and all(p.isidentifier() for p in module.split(".") + attr.split("."))
    )


def load_object(spec: str, field_name: str) -> Any:
    """Import ``module:attr`` (``attr`` may be dotted); ConfigError naming ``field_name`` when it fails."""
    if not is_plugin_path(spec):
        raise ConfigError(
            f"{field_name}={spec!r} is not a plug-in path: write module:attribute, e.g. my_pkg.rewards:fn"
        )
    module_name, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"{field_name}={spec}: cannot import module {module_name} ({type(exc).__name__}: {str(exc)[:160]}); "
            "is it installed or on PYTHONPATH?"
        ) from None
    except Exception as exc:  # noqa: BLE001 - the user's module raised while importing
        raise ConfigError(
            f"{field_name}={spec}: importing {module_name} raised {type(exc).__name__}: {str(exc)[:160]}"
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{field_name}={spec}: {module_name} has no attribute {attr}")
        obj = getattr(obj, part)
    return obj


def load_callable(spec: str, field_name: str):
    obj = load_object(spec, field_name)
    if not callable(obj):
        raise ConfigError(f"{field_name}={spec} is not callable")
    return obj


class SolverReward(Protocol):
    """``rewards.solver_reward: module:fn``: the M rewards of the Solver's attempts at one question.

    ``correct[j]``: the grader's verdict of attempt j against the Proposer's (or buffered) answer;
    ``responses[j]``: its text; ``question``: the problem and the Proposer's answer; ``rng``: a numpy
    Generator seeded from the run seed and the step (use it for any randomness). Return M floats.
    """

    def __call__(
        self,
        *,
        correct: Sequence[bool],
        responses: Sequence[str],
        question: Question,
        rng: np.random.Generator,
    ) -> Sequence[float]: ...


class ProposerReward(Protocol):
    """``rewards.proposer_reward: module:fn``: the reward of one proposal.

    ``p_tilde``: its validated pass rate (0 for an invalid question); ``diversity``: d against the
    history; ``question``: the parsed question or its ParseFailure; ``cfg``: the ``rewards`` section.
    The default is ``rewards.proposer_reward`` (method.md). Return one float.
    """

    def __call__(
        self, *, p_tilde: float, diversity: float, question: Question | ParseFailure, cfg: Any
    ) -> float: ...


@dataclass
class StepEvent:
    """What a ``StepCallback`` receives: ``kind`` is ``step`` (after each step: its metrics and rollout
    records, as metrics.jsonl and rollouts.jsonl get them) or ``checkpoint`` (after a checkpoint is
    written: its ``path``)."""

    kind: str
    step: int
    run_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    rollouts: list[dict[str, Any]] = field(default_factory=list)
    path: Path | None = None


class StepCallback(Protocol):
    """``run.callbacks: [module:fn, ...]``: called on the main process after each step and each checkpoint.
    It observes; it must not change the run (what it returns is ignored; an exception stops the run)."""

    def __call__(self, event: StepEvent) -> None: ...


def read_prompt_file(path: str, field_name: str) -> str:
    """The text of a prompt template file (UTF-8, at most 64 kB); ConfigError naming the field otherwise."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{field_name}={path}: no such file")
    if p.stat().st_size > 64 * 1024:
        raise ConfigError(f"{field_name}={path}: a prompt template is at most 64 kB; this file is larger")
    try:
        return p.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as exc:
        raise ConfigError(
            f"{field_name}={path}: cannot read it as UTF-8 text ({type(exc).__name__})"
        ) from None
