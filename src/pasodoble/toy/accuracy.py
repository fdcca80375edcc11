"""Fast held-out accuracy of a toy Solver (the cold-start curve and quick diagnostics), by style.

Batches many problems per generation call (the per-problem-seeded ``pasodoble eval`` path is what
the demo reports; this one is for curves during training) and compares the last ``\\boxed{}``
answer with the integer answer exactly, which is what equivalence means for this family.

A Solver answer has one of two styles (``answer_style``): *worked*, the working of
``toy.corpus.worked_solution`` (at least one line ``a op b = c``), or *direct*, ``The answer is
\\boxed{V}.`` with no working line; anything else (no ``The answer is``) is *other*. ``style_summary`` gives the worked share
and each style's accuracy from (response, correct) pairs, the demo's evaluation samples included.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pasodoble.extract import last_boxed

STYLES = ("worked", "direct", "other")
_WORKING_LINE = re.compile(r"^\S.* = -?\d+(?:, leaving .+)?$", re.MULTILINE)


def boxed_int_correct(text: str, answer: str) -> bool:
    pred = last_boxed(text)
    return pred is not None and pred.strip() == str(answer).strip()


def answer_style(text: str) -> str:
    """``worked`` when the answer has a working line (``a op b = c``), else ``direct`` when it says
    ``The answer is``, else ``other``."""
    if _WORKING_LINE.search(text):
        return "worked"
    return "direct" if "The answer is" in text else "other"


def style_summary(samples: Iterable[tuple[str, bool]]) -> dict[str, float | int | None]:
    """From (response, correct) pairs: ``accuracy``, ``worked_share`` (share of worked answers),
    ``worked_accuracy`` and ``direct_accuracy`` (None for a style with no answer), and counts."""
    count = dict.fromkeys(STYLES, 0)
    right = dict.fromkeys(STYLES, 0)
    for text, correct in samples:
        style = answer_style(text)
        count[style] += 1
        right[style] += bool(correct)
    total = sum(count.values())
    if total == 0:
        raise ValueError("style_summary needs at least one sample")
    return {
        "accuracy": sum(right.values()) / total,
        "worked_share": count["worked"] / total,
        "worked_accuracy": right["worked"] / count["worked"] if count["worked"] else None,
        "direct_accuracy": right["direct"] / count["direct"] if count["direct"] else None,
        "samples": total,
        **{f"{style}_count": count[style] for style in STYLES},
    }


def solver_prompt_ids(tokenizer, problems: list[dict[str, Any]]) -> list[list[int]]:
    """The demo's Solver prompt (``toy.model.SOLVER_PROMPT`` in the chat template) of each problem, as ids."""
    from pasodoble.prompts import SOLVER, build_prompt
    from pasodoble.toy.model import SOLVER_PROMPT

    return [
        tokenizer(
            build_prompt(SOLVER, tokenizer, problem=p["problem"], template=SOLVER_PROMPT),
            add_special_tokens=False,
        ).input_ids
        for p in problems
    ]


def toy_solver_eval(
    model,
    tokenizer,
    problems: list[dict[str, Any]],
    *,
    temperature: float,
    seed: int,
    samples: int = 1,
    max_new_tokens: int = 128,
    batch_size: int = 256,
) -> dict[str, float | int | None]:
    """``style_summary`` of ``samples`` samples of each problem (``problem``/``answer`` records)."""
    from pasodoble.rollout.base import SamplingParams
    from pasodoble.rollout.hf import HFBackend

    backend = HFBackend(model, tokenizer, generation_batch_size=batch_size)
    prompts = solver_prompt_ids(tokenizer, problems)
    params = SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens, n=samples, seed=seed)
    groups = backend.generate(prompts, params)
    return style_summary(
        (c.text, boxed_int_correct(c.text, p["answer"]))
        for p, g in zip(problems, groups, strict=True)
        for c in g
    )


def toy_accuracy(model, tokenizer, problems: list[dict[str, Any]], **kwargs) -> float:
    """Mean correctness over ``samples`` samples of each problem (``toy_solver_eval``'s accuracy)."""
    return float(toy_solver_eval(model, tokenizer, problems, **kwargs)["accuracy"])
