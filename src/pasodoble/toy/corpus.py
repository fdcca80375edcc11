"""The toy world's synthetic corpus: pre-training text that doubles as the knowledge base.

``build_corpus(n, seed, exclude=...)`` returns ``n`` distinct records ``{"id", "text", "kind"}``:

- ``fact``: one operation stated in words or symbols (``7 times 8 is 56.``, ``12 - 35 = -23.``);
- ``worked``: a canonical problem (``toy.family``) and its working in the fixed format of
  ``worked_solution``, ending with ``The answer is V.``. Knowledge snippets that are worked in-family
  examples let the Proposer write in-family problems with reliable answers (issue 6's prototype);
- ``explanation``: order of operations, left-to-right sums, negative results, parentheses, each with
  concrete numbers.

The working format reduces one operation per line: the group first, then products, then sums, each
left to right. A line is ``a op b = c`` followed, while more than one number remains, by
``, leaving <what is left>``; a negative number other than the first of an expression or group is
written in parentheses::

    (34 + 8) * 3 - 17
    34 + 8 = 42, leaving 42 * 3 - 17
    42 * 3 = 126, leaving 126 - 17
    126 - 17 = 109
    The answer is 109.

Held-out problems (``exclude``, problem texts such as ``What is 12 - 5 * 7?``) never appear: no record
computes a held-out expression, whether as a worked problem, an intermediate line of a working, a fact
or an explanation's example. The generator's answers are training data only: the dual-play code path
must never import this package (a unit test checks it).

Everything is deterministic from ``seed`` (``random.Random`` with a string seed, stable across runs).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pasodoble.toy.family import Expression, evaluate, parse_canonical, sample_expression

KINDS = ("fact", "worked", "explanation")
DEFAULT_MIX = {"fact": 0.2, "worked": 0.7, "explanation": 0.1}
OP_WORDS = {"+": "plus", "-": "minus", "*": "times"}
_APPLY = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


# --------------------------------------------------------------------------------------------------
# The working format


def _num(value: int, *, lead: bool) -> str:
    """A number in a working: a negative one in parentheses unless it leads an expression or group."""
    return str(value) if value >= 0 or lead else f"({value})"


def _render(values: list[int], ops: list[str], group: tuple[int, int] | None) -> str:
    parts: list[str] = []
    for i, v in enumerate(values):
        lead = i == 0 or (group is not None and i == group[0])
        atom = _num(v, lead=lead)
        if group and i == group[0]:
            atom = "(" + atom
        if group and i == group[1]:
            atom += ")"
        parts.append(atom)
        if i < len(ops):
            parts.append(ops[i])
    return " ".join(parts)


@dataclass(frozen=True)
class Step:
    """One line of a working: ``left = value`` and what is left afterwards (None on the last line)."""

    left: str
    value: int
    rest: str | None

    def line(self) -> str:
        return f"{self.left} = {self.value}" + (f", leaving {self.rest}" if self.rest else "")


def working_steps(expr: Expression) -> list[Step]:
    """The reductions of ``expr`` in the fixed order: inside the group first, then the rest; within
    each, the first ``*`` if any, else the first ``+``/``-`` (so products, then sums, left to right)."""
    values = list(expr.operands)
    ops = list(expr.operators)
    group = expr.parens
    steps: list[Step] = []
    while ops:
        lo, hi = group if group else (0, len(values) - 1)
        span = range(lo, hi)
        k = next((j for j in span if ops[j] == "*"), lo)
        a, op, b = values[k], ops[k], values[k + 1]
        value = _APPLY[op](a, b)
        left = f"{_num(a, lead=True)} {op} {_num(b, lead=False)}"
        values[k : k + 2] = [value]
        del ops[k]
        if group:
            group = (group[0], group[1] - 1)
            if group[0] == group[1]:
                group = None
        steps.append(Step(left, value, _render(values, ops, group) if ops else None))
    return steps


def worked_solution(expr: Expression, *, boxed: bool = False) -> str:
    """The working of ``expr``: the expression, one line per reduction, then ``The answer is V.``
    (``The answer is \\boxed{V}.`` with ``boxed``; the cold-start data uses that form)."""
    value = evaluate(expr)
    answer = f"\\boxed{{{value}}}" if boxed else str(value)
    lines = [expr.text(), *(s.line() for s in working_steps(expr)), f"The answer is {answer}."]
    return "\n".join(lines)


def worked_text(expr: Expression) -> str:
    """A ``worked`` corpus record's text: the problem, then its working."""
    return f"{expr.problem()}\n{worked_solution(expr)}"


def computed_units(expr: Expression) -> list[str]:
    """Every expression whose value a working of ``expr`` states: the whole, each line's left side
    and each remainder (the held-out guard compares these with the held-out expressions)."""
    units = [expr.text()]
    for s in working_steps(expr):
        units.append(s.left)
        if s.rest:
            units.append(s.rest)
    return units


def expression_of(text: str) -> Expression | None:
    """The canonical expression of a ``worked`` text (its first line), or None."""
    return parse_canonical(text.split("\n", 1)[0])


# --------------------------------------------------------------------------------------------------
# The held-out guard


@dataclass
class HeldOut:
    """The held-out problems, as exact texts and as expression texts (``34 + 8`` for ``What is 34 + 8?``)."""

    texts: frozenset[str]
    expressions: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        exprs = set()
        for text in self.texts:
            expr = parse_canonical(text)
            if expr is not None:
                exprs.add(expr.text())
        self.expressions = frozenset(exprs)

    @classmethod
    def of(cls, exclude: Iterable[str]) -> HeldOut:
        return cls(frozenset(t.strip() for t in exclude))

    def blocks(self, text: str, units: Iterable[str]) -> bool:
        """Whether a text (or a computed unit of it) is held out."""
        return text in self.texts or any(u in self.expressions for u in units)


# --------------------------------------------------------------------------------------------------
# Record generators: each returns (text, computed units)


def _operand(rng: random.Random) -> int:
    """An operand of a fact: mostly 0-99, sometimes up to 999 (workings meet larger numbers)."""
    return rng.randint(0, 99) if rng.random() < 0.75 else rng.randint(100, 999)


def _fact(rng: random.Random) -> tuple[str, list[str]]:
    op = rng.choice(("+", "-", "*"))
    if op == "*":
        a, b = rng.randint(2, 9), _operand(rng)
        if rng.random() < 0.5:
            a, b = b, a
    else:
        a, b = _operand(rng), _operand(rng)
    c = _APPLY[op](a, b)
    forms = {
        "+": [f"{a} plus {b} is {c}.", f"{a} + {b} = {c}.", f"Adding {b} to {a} gives {c}."],
        "-": [f"{a} minus {b} is {c}.", f"{a} - {b} = {c}.", f"Taking {b} away from {a} leaves {c}."],
        "*": [f"{a} times {b} is {c}.", f"{a} * {b} = {c}.", f"{a} groups of {b} make {c}."],
    }[op]
    return rng.choice(forms), [f"{a} {op} {b}"]


def _worked(rng: random.Random) -> tuple[str, list[str]]:
    expr = sample_expression(rng)
    return worked_text(expr), computed_units(expr)


def _small(rng: random.Random) -> int:
    return rng.randint(2, 9)


def _explanation(rng: random.Random) -> tuple[str, list[str]]:
    topic = rng.randrange(6)
    a, b, c = rng.randint(0, 99), rng.randint(0, 99), rng.randint(0, 99)
    if topic == 0:  # products before sums
        s = _small(rng)
        e = Expression((a, b, s), (rng.choice("+-"), "*"))
        v, bs = evaluate(e), b * s
        text = (
            f"Order of operations: multiplication comes before addition and subtraction. "
            f"In {e.text()} we first compute {b} * {s} = {bs}, then {a} {e.operators[0]} {bs} = {v}."
        )
        return text, [*computed_units(e), f"{b} * {s}", f"{a} {e.operators[0]} {bs}"]
    if topic == 1:  # parentheses first
        s = _small(rng)
        grouped = Expression((a, b, s), ("+", "*"), (0, 1))
        plain = Expression((a, b, s), ("+", "*"))
        text = (
            f"Parentheses come first: in {grouped.text()} the group gives {a} + {b} = {a + b}, so the value is "
            f"{a + b} * {s} = {evaluate(grouped)}. Without the parentheses, {plain.text()} = {evaluate(plain)}, "
            f"because the product {b} * {s} is computed first."
        )
        units = [*computed_units(grouped), *computed_units(plain)]
        return text, units
    if topic == 2:  # sums left to right
        e = Expression((a, b, c), ("-", "+"))
        text = (
            f"Addition and subtraction are done from left to right: {e.text()} is {a} - {b} = {a - b} first, "
            f"then {_num(a - b, lead=True)} + {c} = {evaluate(e)}."
        )
        return text, computed_units(e)
    if topic == 3:  # negative results
        lo, hi = sorted((a, b))
        if lo == hi:
            hi += 1
        text = (
            f"Subtracting a larger number from a smaller one gives a negative result: {lo} - {hi} = {lo - hi}, "
            f"the opposite of {hi} - {lo} = {hi - lo}."
        )
        return text, [f"{lo} - {hi}", f"{hi} - {lo}"]
    if topic == 4:  # a negative group times a small factor
        lo, hi = sorted((a, b))
        if lo == hi:
            hi += 1
        s = _small(rng)
        e = Expression((s, lo, hi), ("*", "-"), (1, 2))
        text = (
            f"A negative number times a positive one is negative: in {e.text()} the group is "
            f"{lo} - {hi} = {lo - hi}, and {s} * ({lo - hi}) = {evaluate(e)}."
        )
        return text, computed_units(e)
    # topic 5: subtracting a negative number adds it
    lo, hi = sorted((a, b))
    if lo == hi:
        hi += 1
    e = Expression((c, lo, hi), ("-", "-"), (1, 2))
    text = (
        f"Subtracting a negative number is adding its opposite: in {e.text()} the group is {lo} - {hi} = "
        f"{lo - hi}, so {c} - ({lo - hi}) = {c} + {hi - lo} = {evaluate(e)}."
    )
    return text, [*computed_units(e), f"{c} + {hi - lo}"]


_GENERATORS = {"fact": _fact, "worked": _worked, "explanation": _explanation}


def build_corpus(
    n: int, seed: int, *, exclude: Iterable[str], mix: dict[str, float] | None = None
) -> list[dict[str, str]]:
    """``n`` distinct records ``{"id", "text", "kind"}`` (kinds drawn with weights ``mix``, default
    ``DEFAULT_MIX``), none computing a held-out problem of ``exclude``. Deterministic from ``seed``."""
    mix = DEFAULT_MIX if mix is None else mix
    unknown = set(mix) - set(KINDS)
    if unknown or not any(w > 0 for w in mix.values()):
        raise ValueError(f"mix needs positive weights over {', '.join(KINDS)}; got {mix}")
    held_out = HeldOut.of(exclude)
    kinds = [k for k in KINDS if mix.get(k, 0) > 0]
    weights = [mix[k] for k in kinds]
    rng = random.Random(f"pasodoble-toy-corpus:{seed}")
    seen: set[str] = set()
    records: list[dict[str, str]] = []
    attempts = 0
    while len(records) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise ValueError(f"could not draw {n} distinct records; ask for fewer")
        kind = rng.choices(kinds, weights)[0]
        text, units = _GENERATORS[kind](rng)
        if text in seen or held_out.blocks(text, units):
            continue
        seen.add(text)
        records.append({"id": f"toy-{seed}-{len(records):06d}", "text": text, "kind": kind})
    return records


def write_jsonl(records: Iterable[dict[str, Any]], path: str | Path) -> Path:
    """Write records as JSON lines (creating parent directories); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path
