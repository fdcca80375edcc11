"""Cold-start SFT data of the toy world, in the chat format that ``pasodoble sft train`` reads.

Each example is ``{"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}`` whose user turn
is exactly the RL prompt's user message (``prompts.user_message`` with the run's ``template``, e.g. the demo's short prompts), so the cold start teaches the
format the RL stage will ask for (method.md, Cold start):

- Proposer (``proposer_examples``): the snippet is a ``worked`` corpus record; the answer is a short
  thinking that names the change, a NEW canonical problem derived from the snippet's (one number
  changed, one operation changed, or one operation added), and its working ending in ``\\boxed{V}``::

      <think>
      The passage works out (34 + 8) * 3 - 17. I keep its form and change the fourth number from 17 to 25.
      </think>
      <problem>What is (34 + 8) * 3 - 25?</problem>
      (34 + 8) * 3 - 25
      ...
      The answer is \\boxed{101}.

  A derivation is redrawn when its problem equals the snippet's, is held out, computes a held-out
  expression, or would fail ``rewards.question_validity`` (the answer leaking as a whole token).
- Solver (``solver_examples``): a canonical problem; the answer is its working ending in ``\\boxed{V}``
  or, for a ``direct_share`` of the problems drawn independently of the problem, the direct answer
  ``The answer is \\boxed{V}.`` with no working (``direct_answer``). Such a teacher gives the cold-start
  Solver two behaviours, only one of which it can carry out reliably; RL has to pick it. With
  ``direct_min_operands=3`` the direct answers go only to 3-4-operand problems, whose values a small
  model cannot find in one go however long it trains, so more SFT cannot make them right (issue 23).

The values come from the generator (``toy.family.evaluate``), playing the paper's teacher; they are
cold-start data only. Held-out problems (``exclude``) never appear. Deterministic from ``seed``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Any

from pasodoble.parse import parse_proposal
from pasodoble.prompts import PROPOSER, SOLVER, user_message
from pasodoble.rewards import question_validity
from pasodoble.toy.corpus import (
    OP_WORDS,
    HeldOut,
    computed_units,
    expression_of,
    worked_solution,
)
from pasodoble.toy.family import (
    OPERATORS,
    Expression,
    evaluate,
    parse_canonical,
    products_ok,
    sample_expression,
)

ORDINALS = ("first", "second", "third", "fourth")


def chat(user: str, assistant: str) -> dict[str, Any]:
    """One SFT example in the chat format of ``sft.train.read_chat_jsonl``."""
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}


# --------------------------------------------------------------------------------------------------
# Deriving a new problem from a snippet's


def _change_number(expr: Expression, rng: random.Random) -> tuple[Expression, str] | None:
    i = rng.randrange(len(expr.operands))
    old = expr.operands[i]
    new = rng.randint(2, 9) if 2 <= old <= 9 and rng.random() < 0.7 else rng.randint(0, 99)
    if new == old:
        return None
    operands = list(expr.operands)
    operands[i] = new
    derived = Expression(tuple(operands), expr.operators, expr.parens)
    note = f"I keep its form and change the {ORDINALS[i]} number from {old} to {new}."
    return derived, note


def _change_operation(expr: Expression, rng: random.Random) -> tuple[Expression, str] | None:
    k = rng.randrange(len(expr.operators))
    old = expr.operators[k]
    new = rng.choice([op for op in OPERATORS if op != old])
    operators = list(expr.operators)
    operators[k] = new
    derived = Expression(expr.operands, tuple(operators), expr.parens)
    which = f"the {ORDINALS[k]} operation" if len(expr.operators) > 1 else "the operation"
    note = f"I keep the numbers and change {which} from {OP_WORDS[old]} to {OP_WORDS[new]}."
    return derived, note


def _add_operation(expr: Expression, rng: random.Random) -> tuple[Expression, str] | None:
    if len(expr.operands) >= 4:
        return None
    op = rng.choice(OPERATORS)
    value = rng.randint(2, 9) if op == "*" else rng.randint(0, 99)
    if rng.random() < 0.5:
        derived = Expression((*expr.operands, value), (*expr.operators, op), expr.parens)
        note = f"I add one more operation: {op} {value} at the end."
    else:
        parens = (expr.parens[0] + 1, expr.parens[1] + 1) if expr.parens else None
        derived = Expression((value, *expr.operands), (op, *expr.operators), parens)
        note = f"I add one more operation: {value} {op} in front."
    return derived, note


_CHANGES = (_change_number, _change_operation, _add_operation)


def derive(expr: Expression, rng: random.Random) -> tuple[Expression, str]:
    """A different canonical expression one edit away from ``expr``, and the sentence naming the edit."""
    while True:
        result = rng.choice(_CHANGES)(expr, rng)
        if result is None:
            continue
        derived, note = result
        if derived != expr and products_ok(derived) and parse_canonical(derived.problem()) == derived:
            return derived, note


def proposer_completion(snippet_expr: Expression, derived: Expression, note: str) -> str:
    """The Proposer's answer: thinking, ``<problem>``, and the worked solution ending in ``\\boxed{}``."""
    thinking = f"The passage works out {snippet_expr.text()}. {note}"
    return f"<think>\n{thinking}\n</think>\n<problem>{derived.problem()}</problem>\n" + worked_solution(
        derived, boxed=True
    )


def proposer_examples(
    snippets: Sequence[dict[str, Any] | str],
    n: int,
    seed: int,
    *,
    exclude: Iterable[str],
    template: str | None = None,
) -> list[dict[str, Any]]:
    """``n`` Proposer examples with distinct problems, on the ``worked`` snippets among ``snippets``
    (corpus records or texts; a snippet is worked when its first line is a canonical problem), visited in a seeded order and cycled. Each parses with
    ``parse_proposal``, passes ``question_validity`` and holds a canonical problem that is not held out."""
    texts = [s["text"] if isinstance(s, dict) else s for s in snippets]
    pool = [(t, e) for t in texts if (e := expression_of(t)) is not None]
    if not pool:
        raise ValueError("proposer_examples needs worked snippets (texts starting with a canonical problem)")
    held_out = HeldOut.of(exclude)
    rng = random.Random(f"pasodoble-toy-proposer:{seed}")
    order = list(range(len(pool)))
    rng.shuffle(order)
    seen: set[str] = set()
    examples: list[dict[str, Any]] = []
    attempts = 0
    while len(examples) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise ValueError(f"could not derive {n} distinct Proposer problems from {len(pool)} snippets")
        text, expr = pool[order[(attempts - 1) % len(order)]]
        derived, note = derive(expr, rng)
        problem = derived.problem()
        if problem in seen or held_out.blocks(problem, computed_units(derived)):
            continue
        completion = proposer_completion(expr, derived, note)
        if not question_validity(parse_proposal(completion)).valid:
            continue  # e.g. the answer occurs as a whole token of the problem
        seen.add(problem)
        examples.append(chat(user_message(PROPOSER, snippet=text, template=template), completion))
    return examples


def direct_answer(expr: Expression) -> str:
    """The Solver's answer without working: ``The answer is \\boxed{V}.``"""
    return f"The answer is \\boxed{{{evaluate(expr)}}}."


def solver_examples(
    n: int,
    seed: int,
    *,
    exclude: Iterable[str],
    template: str | None = None,
    direct_share: float = 0.0,
    direct_min_operands: int = 2,
) -> list[dict[str, Any]]:
    """``n`` Solver examples on distinct canonical problems that are not held out: the RL Solver
    prompt, answered with the working ending in ``\\boxed{V}``, or with ``direct_answer`` for a
    ``direct_share`` of the problems with at least ``direct_min_operands`` operands (2: any problem;
    3: only problems a small model cannot compute in one go, so that more SFT cannot make the direct
    answers right). The problems do not depend on the style settings (the style is drawn from its own
    generator, once per problem whatever its size), and among the problems large enough each one's
    style is independent of the problem."""
    if not 0.0 <= direct_share <= 1.0:
        raise ValueError(f"direct_share must be in [0, 1]; got {direct_share}")
    if not 2 <= direct_min_operands <= 5:
        raise ValueError(
            f"direct_min_operands must be in 2-5 (5: no direct answers); got {direct_min_operands}"
        )
    held_out = HeldOut.of(exclude)
    rng = random.Random(f"pasodoble-toy-solver:{seed}")
    style_rng = random.Random(f"pasodoble-toy-solver-style:{seed}")
    seen: set[str] = set()
    examples: list[dict[str, Any]] = []
    attempts = 0
    while len(examples) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise ValueError(f"could not draw {n} distinct Solver problems")
        expr = sample_expression(rng)
        problem = expr.problem()
        if problem in seen or held_out.blocks(problem, computed_units(expr)):
            continue
        seen.add(problem)
        direct = style_rng.random() < direct_share and len(expr.operands) >= direct_min_operands
        answer = direct_answer(expr) if direct else worked_solution(expr, boxed=True)
        examples.append(chat(user_message(SOLVER, problem=problem, template=template), answer))
    return examples
