"""The canonical problem family of the embedded arithmetic world (the demo's held-out evaluation).

A canonical problem is ``What is E?`` where ``E`` is an integer expression with 2, 3 or 4 operands in
0–99, operators ``+``, ``-``, ``*`` with single spaces around them, at most one pair of parentheses
(around two or more operands, never the whole expression), and every product having at least one
factor in 2–9: each ``*`` has, immediately on its left or right, a single-digit literal from 2 to 9.
The answer is the integer value of ``E`` (it may be negative). Example: ``What is (34 + 8) * 3 - 17?``
→ ``109``.

``parse_canonical`` checks a problem text against that grammar and ``evaluate`` computes its value
with a small precedence parser (model text is never executed). ``sample_problem`` draws problems
uniformly over operand counts, operators and operands, deterministically from a ``random.Random``.

Run ``python -m pasodoble.toy.family --n 500 --seed 1 --out heldout.jsonl`` for a benchmark file
(``id``, ``problem``, ``answer``) that ``pasodoble eval --benchmarks heldout.jsonl`` reads.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

OPERATORS = ("+", "-", "*")
_NUMBER = re.compile(r"0|[1-9][0-9]?")  # 0-99 without leading zeros
_PROBLEM = re.compile(r"What is (.{1,80})\?")


@dataclass(frozen=True)
class Expression:
    """Operands, the operators between them, and the optional parenthesized span [open, close]."""

    operands: tuple[int, ...]
    operators: tuple[str, ...]
    parens: tuple[int, int] | None = None  # indices of the first and last operand inside

    def text(self) -> str:
        parts: list[str] = []
        for i, value in enumerate(self.operands):
            atom = str(value)
            if self.parens and i == self.parens[0]:
                atom = "(" + atom
            if self.parens and i == self.parens[1]:
                atom = atom + ")"
            parts.append(atom)
            if i < len(self.operators):
                parts.append(self.operators[i])
        return " ".join(parts)

    def problem(self) -> str:
        return f"What is {self.text()}?"


def _factors(expr: Expression, k: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Operand index ranges of the two factors of operator ``k`` (between operands k and k + 1).

    A parenthesized group is one factor when the operator is outside it (``(a + b) * 3``); inside the
    group (``(2 * 30 + 1)``) the factors are the single operands.
    """
    lo_hi = expr.parens
    inside = lo_hi is not None and lo_hi[0] <= k and k + 1 <= lo_hi[1]
    left = lo_hi if lo_hi and not inside and lo_hi[0] <= k <= lo_hi[1] else (k, k)
    right = lo_hi if lo_hi and not inside and lo_hi[0] <= k + 1 <= lo_hi[1] else (k + 1, k + 1)
    return left, right


def products_ok(expr: Expression) -> bool:
    """Every ``*`` has a literal in 2–9 as its immediate left or right factor (a group is not a literal)."""
    for k, op in enumerate(expr.operators):
        if op != "*":
            continue
        left, right = _factors(expr, k)
        small = [lo == hi and 2 <= expr.operands[lo] <= 9 for lo, hi in (left, right)]
        if not any(small):
            return False
    return True


def evaluate(expr: Expression) -> int:
    """The integer value, with ``*`` binding tighter than ``+``/``-`` and the group evaluated first."""
    values = list(expr.operands)
    ops = list(expr.operators)
    if expr.parens:
        lo, hi = expr.parens
        inner = _evaluate_flat(values[lo : hi + 1], ops[lo:hi])
        values = values[:lo] + [inner] + values[hi + 1 :]
        ops = ops[:lo] + ops[hi:]
    return _evaluate_flat(values, ops)


def _evaluate_flat(values: list[int], ops: list[str]) -> int:
    terms = [values[0]]
    signs = [1]
    for op, v in zip(ops, values[1:], strict=True):
        if op == "*":
            terms[-1] *= v
        else:
            terms.append(v)
            signs.append(1 if op == "+" else -1)
    return sum(s * t for s, t in zip(signs, terms, strict=True))


def parse_canonical(problem: str) -> Expression | None:
    """The expression of a canonical problem text, or None when the text is not in the family."""
    m = _PROBLEM.fullmatch(problem.strip())
    if m is None:
        return None
    tokens = m.group(1).split(" ")
    if len(tokens) % 2 == 0:
        return None
    operands: list[int] = []
    operators: list[str] = []
    opens: list[int] = []
    closes: list[int] = []
    for pos, tok in enumerate(tokens):
        if pos % 2 == 1:
            if tok not in OPERATORS:
                return None
            operators.append(tok)
            continue
        index = len(operands)
        if tok.startswith("("):
            opens.append(index)
            tok = tok[1:]
        if tok.endswith(")"):
            closes.append(index)
            tok = tok[:-1]
        if not _NUMBER.fullmatch(tok):
            return None
        operands.append(int(tok))
    if not 2 <= len(operands) <= 4 or len(opens) > 1 or len(opens) != len(closes):
        return None
    parens = None
    if opens:
        lo, hi = opens[0], closes[0]
        if not lo < hi or (lo == 0 and hi == len(operands) - 1):
            return None
        parens = (lo, hi)
    expr = Expression(tuple(operands), tuple(operators), parens)
    return expr if products_ok(expr) else None


def sample_expression(rng: random.Random) -> Expression:
    """A random canonical expression: operand count uniform in 2–4, a group with probability 1/2."""
    while True:
        n = rng.randint(2, 4)
        operands = [rng.randint(0, 99) for _ in range(n)]
        operators = [rng.choice(OPERATORS) for _ in range(n - 1)]
        parens = None
        if n >= 3 and rng.random() < 0.5:
            spans = [(lo, hi) for lo in range(n) for hi in range(lo + 1, n) if (lo, hi) != (0, n - 1)]
            parens = rng.choice(spans)
        expr = Expression(tuple(operands), tuple(operators), parens)
        # make each product have a single-digit factor by redrawing one adjacent literal into 2-9
        for k, op in enumerate(operators):
            if op != "*":
                continue
            candidates = [lo for lo, hi in _factors(expr, k) if lo == hi]
            if candidates and not any(2 <= operands[i] <= 9 for i in candidates):
                operands[rng.choice(candidates)] = rng.randint(2, 9)
            expr = Expression(tuple(operands), tuple(operators), parens)
        if products_ok(expr):
            return expr


def sample_problems(n: int, seed: int) -> list[dict[str, str]]:
    """``n`` distinct canonical problems as benchmark records (``id``, ``problem``, ``answer``)."""
    rng = random.Random(seed)
    seen: set[str] = set()
    records: list[dict[str, str]] = []
    while len(records) < n:
        expr = sample_expression(rng)
        problem = expr.problem()
        if problem in seen:
            continue
        seen.add(problem)
        records.append(
            {"id": f"canonical-{seed}-{len(records)}", "problem": problem, "answer": str(evaluate(expr))}
        )
    return records


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write canonical arithmetic problems as a benchmark JSONL file.")
    ap.add_argument("--n", type=int, default=500, help="number of distinct problems")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", required=True, help="output .jsonl path")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in sample_problems(args.n, args.seed)))
    print(f"wrote {args.n} problems to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
