"""Fuzz test of the grader: random expressions rendered to LaTeX by sympy in two equivalent forms and one
non-equivalent form; the grader must accept the first two as equal and reject the third, in both
directions (as prediction and as gold).

Families (each a near miss by construction, checked with sympy when the case is built):

- polynomials: a product of linear factors vs its expansion; the expansion with one coefficient changed;
- rational functions: a sum of two fractions vs the single fraction; a numerator changed;
- finite sums and products with integer bounds (``\\sum_{k=2}^{5} (k^2 + 1)``, sometimes written
  ``S = ...``) vs their value; the lower bound or value + 1 (issue 16: ``\\sum_{k=`` was read as an
  assignment);
- exact arithmetic: an unevaluated sum of fractions vs its value; the value off by one unit;
- radicals: ``\\sqrt{72}`` vs ``6 \\sqrt{2}``; a different radicand or coefficient.

Seeded (``PASODOBLE_FUZZ_SEED``, default 0): 30 expressions, 120 checks, a few seconds.
"""

from __future__ import annotations

import os
import random
import time

import sympy
from sympy import Integer, Rational, latex

from pasodoble.config import GraderConfig
from pasodoble.verify import Grader

SEED = int(os.environ.get("PASODOBLE_FUZZ_SEED", "0"))
PER_FAMILY = 6
x, k = sympy.symbols("x k")


def _nonzero(rng: random.Random, lo: int = -5, hi: int = 5) -> int:
    return rng.choice([v for v in range(lo, hi + 1) if v != 0])


def polynomial(rng: random.Random) -> tuple[sympy.Expr, sympy.Expr, sympy.Expr]:
    factors = [_nonzero(rng, 1, 3) * x + _nonzero(rng) for _ in range(rng.randint(2, 3))]
    a = sympy.Mul(*factors, evaluate=False)
    b = sympy.expand(a)
    terms = sympy.Poly(b, x).all_coeffs()
    i = rng.randrange(len(terms))
    c = b + _nonzero(rng, -3, 3) * x ** (len(terms) - 1 - i)
    return a, b, c


def rational_function(rng: random.Random) -> tuple[sympy.Expr, sympy.Expr, sympy.Expr]:
    p, q = rng.sample([v for v in range(-5, 6) if v != 0], 2)
    m, n = _nonzero(rng, 1, 4), _nonzero(rng, -4, 4)
    a = sympy.Add(m / (x + p), n / (x + q), evaluate=False)
    b = sympy.together(a)
    c = sympy.Add((m + 1) / (x + p), n / (x + q), evaluate=False)
    return a, b, c


def finite_operator(rng: random.Random) -> tuple[sympy.Expr, sympy.Expr, sympy.Expr]:
    lo = rng.randint(1, 3)
    hi = lo + rng.randint(1, 3)
    body = rng.choice([k, k**2, k + _nonzero(rng, 1, 4), 2 * k - 1])
    op = rng.choice([sympy.Sum, sympy.Product])
    a = op(body, (k, lo, hi))
    b = a.doit()
    c = Integer(lo) if b != lo else b + 1
    return a, b, c


def exact_arithmetic(rng: random.Random) -> tuple[sympy.Expr, sympy.Expr, sympy.Expr]:
    parts = [Rational(rng.randint(1, 9), rng.randint(2, 9)) for _ in range(rng.randint(2, 3))]
    a = sympy.Add(*parts, evaluate=False)
    b = sympy.Add(*parts)
    c = b + Rational(1, b.q) if rng.random() < 0.5 else b - Rational(1, b.q)
    return a, b, c


def radical(rng: random.Random) -> tuple[sympy.Expr, sympy.Expr, sympy.Expr]:
    free = rng.choice([2, 3, 5, 6, 7])
    coef = rng.randint(2, 6)
    a = sympy.Pow(Integer(coef * coef * free), Rational(1, 2), evaluate=False)
    b = coef * sympy.sqrt(free)
    c = rng.choice([(coef + 1) * sympy.sqrt(free), coef * sympy.sqrt(free + 1)])
    return a, b, c


FAMILIES = [polynomial, rational_function, finite_operator, exact_arithmetic, radical]


def build_cases(seed: int) -> list[tuple[str, str, str, str]]:
    """(family, A, B, C): A and B equivalent LaTeX forms, C not equivalent to them."""
    rng = random.Random(seed)
    cases = []
    for family in FAMILIES:
        for _ in range(PER_FAMILY):
            a, b, c = family(rng)
            # the construction itself is checked: A = B and A != C as values (rational functions of x
            # with rational or surd coefficients: cancel decides zero)
            assert sympy.cancel(a.doit() - b.doit()) == 0, (family.__name__, a, b)
            assert sympy.cancel(a.doit() - c.doit()) != 0, (family.__name__, a, c)
            la = latex(a)
            if family is finite_operator and rng.random() < 0.5:
                la = "S = " + la  # a top-level assignment in front of an "=" inside braces
            cases.append((family.__name__, la, latex(b), latex(c)))
    return cases


def test_fuzz_cases_are_what_the_docstring_says():
    cases = build_cases(SEED)
    assert len(cases) == len(FAMILIES) * PER_FAMILY
    assert len({c[1] for c in cases}) >= 0.9 * len(cases)  # mostly distinct expressions
    assert any("\\sum_{k=" in c[1] for c in cases) and any("\\prod_{k=" in c[1] for c in cases)
    assert any(c[1].startswith("S = ") for c in cases)


def test_grader_separates_equivalent_from_non_equivalent_forms():
    cases = build_cases(SEED)
    preds, golds, expected = [], [], []
    for _, a, b, c in cases:
        for pred, gold, ok in ((b, a, True), (a, b, True), (c, a, False), (a, c, False)):
            preds.append(pred)
            golds.append(gold)
            expected.append(ok)
    t0 = time.perf_counter()
    with Grader(GraderConfig(workers=2, timeout_s=30.0)) as g:
        verdicts = g.grade_batch(preds, golds, extracted=True)
    elapsed = time.perf_counter() - t0
    wrong = [
        f"  expected {ok}, got {v.correct} ({v.reason}): pred={p!r} gold={gl!r}"
        for p, gl, ok, v in zip(preds, golds, expected, verdicts, strict=True)
        if v.correct != ok
    ]
    print(f"fuzz seed {SEED}: {len(preds)} checks of {len(cases)} expressions in {elapsed:.1f} s")
    assert not wrong, f"seed {SEED}:\n" + "\n".join(wrong)
