"""Fast held-out accuracy of a toy Solver (the cold-start curve and quick diagnostics).

Batches many problems per generation call (the per-problem-seeded ``pasodoble eval`` path is what
the demo reports; this one is for curves during training) and compares the last ``\\boxed{}``
answer with the integer answer exactly, which is what equivalence means for this family.
"""

from __future__ import annotations

from typing import Any

from pasodoble.extract import last_boxed


def boxed_int_correct(text: str, answer: str) -> bool:
    pred = last_boxed(text)
    return pred is not None and pred.strip() == str(answer).strip()


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


def toy_accuracy(
    model,
    tokenizer,
    problems: list[dict[str, Any]],
    *,
    temperature: float,
    seed: int,
    samples: int = 1,
    max_new_tokens: int = 128,
    batch_size: int = 256,
) -> float:
    """Mean correctness over ``samples`` samples of each problem (``problem``/``answer`` records)."""
    from pasodoble.rollout.base import SamplingParams
    from pasodoble.rollout.hf import HFBackend

    backend = HFBackend(model, tokenizer, generation_batch_size=batch_size)
    prompts = solver_prompt_ids(tokenizer, problems)
    params = SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens, n=samples, seed=seed)
    groups = backend.generate(prompts, params)
    right = sum(
        boxed_int_correct(c.text, p["answer"]) for p, g in zip(problems, groups, strict=True) for c in g
    )
    return right / (len(problems) * samples)
