"""Tasks: everything that makes dual-play about *math* sits behind one interface, chosen by ``task.name``.

A ``Task`` gives the two built-in prompts, parses a Proposer completion into a ``Question`` (or says why
it cannot), applies the validity rule, tells whether a Solver response has a final answer in the right
format, and builds the grader that compares a response with the Proposer's answer. ``math`` (the
default) is the paper's task; ``qa`` is short-answer question answering over any text corpus, graded by
normalized exact match with F1 reported. ``task.name: my_pkg.tasks:MyTask`` loads a plug-in (docs/tasks.md
has the interface and docs/plugins.md every plug-in point).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from pasodoble.types import ParseFailure, Question, Validity


@runtime_checkable
class TaskGrader(Protocol):
    """What dual-play and ``pasodoble eval`` need from a grader (``verify.Grader`` is the math one)."""

    def grade_batch(self, responses: Sequence[str], golds: Sequence[str], **kwargs: Any) -> list[Any]:
        """One verdict per pair, in order: objects with ``pred`` (str | None), ``correct`` (bool) and
        ``reason`` (None when correct, else a short string such as ``no_answer`` or ``mismatch``), and
        optionally ``score`` (a float in [0, 1], e.g. F1, reported by evaluation)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Task(Protocol):
    """One task of dual-play (docs/tasks.md). Implementations must be deterministic and pure given their
    inputs (bitwise resume replays them), and bounded in time on any model output (untrusted text)."""

    name: str
    proposer_template: str  # the Proposer's built-in user message, with {snippet}
    proposer_template_no_knowledge: str  # the same without a knowledge snippet (knowledge.enabled=false)
    solver_template: str  # the Solver's built-in user message, with {problem}

    def parse_proposal(self, text: str, *, thinking_opened: bool = False) -> Question | ParseFailure: ...

    def question_validity(
        self, question: Question | ParseFailure, *, leak_check: str = "token"
    ) -> Validity: ...

    def has_final_answer(self, text: str) -> bool: ...

    def make_grader(self, cfg: Any) -> TaskGrader: ...


BUILTIN = ("math", "qa")


def get_task(name: str) -> Task:
    """The task named ``name``: ``math``, ``qa``, or a plug-in ``module:attr`` (a Task class or instance,
    or a function returning one). A missing module or attribute is a ConfigError naming ``task.name``."""
    if name == "math":
        from pasodoble.tasks.math import MathTask

        return MathTask()
    if name == "qa":
        from pasodoble.tasks.qa import QATask

        return QATask()
    from pasodoble.config import ConfigError
    from pasodoble.plugins import load_object

    obj = load_object(name, "task.name")
    task = obj
    if isinstance(obj, type) or (callable(obj) and not isinstance(obj, Task)):  # a class or a factory
        try:
            task = obj()
        except Exception as exc:  # noqa: BLE001 - the plug-in is not a Task factory
            raise ConfigError(
                f"task.name={name}: calling it to build the task raised {type(exc).__name__}: {str(exc)[:120]} "
                "(name a Task class, instance or factory; docs/tasks.md)"
            ) from None
    if not isinstance(task, Task):
        raise ConfigError(
            f"task.name={name} does not give a Task (needs name, proposer_template, proposer_template_no_knowledge, "
            "solver_template, parse_proposal, question_validity, has_final_answer, make_grader; docs/tasks.md)"
        )
    return task


__all__ = ["BUILTIN", "Task", "TaskGrader", "get_task"]
