"""The canonical arithmetic family: grammar, values, sampling."""

from __future__ import annotations

import ast
import json
import operator
import random
from collections import Counter

import pytest

from pasodoble.toy.family import Expression, evaluate, main, parse_canonical, products_ok, sample_problems


def _oracle(text: str) -> int:
    """Independent value of our own generated expression text, via Python's AST (no eval)."""
    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}

    def walk(node):
        if isinstance(node, ast.BinOp):
            return ops[type(node.op)](walk(node.left), walk(node.right))
        assert isinstance(node, ast.Constant)
        return node.value

    return walk(ast.parse(text, mode="eval").body)


@pytest.mark.parametrize(
    "problem, value",
    [
        ("What is (34 + 8) * 3 - 17?", 109),  # the example: 42 * 3 - 17
        ("What is 12 - 5 * 7?", -23),  # * binds tighter: 12 - 35
        ("What is 99 * 9 * 2 - 0?", 1782),
        ("What is 3 * (10 - 40)?", -90),
        ("What is 0 + 0?", 0),
        ("What is 9 + (2 * 30)?", 69),  # a product inside the group: its factors are 2 and 30
        ("What is (2 + 3 * 4) - 5?", 9),
    ],
)
def test_hand_checked_values(problem, value):
    expr = parse_canonical(problem)
    assert expr is not None and evaluate(expr) == value


@pytest.mark.parametrize(
    "problem",
    [
        "What is 5?",  # one operand
        "What is 1 + 2 + 3 + 4 + 5?",  # five operands
        "What is 12 * 34?",  # no factor in 2-9
        "What is (12 + 3) * (4 + 5)?",  # two pairs of parentheses
        "What is (1 + 2)?",  # parentheses around the whole expression
        "What is 1  + 2?",  # double space
        "What is 1+2?",  # no spaces
        "What is 100 + 2?",  # operand above 99
        "What is 07 + 2?",  # leading zero
        "What is 3 / 4?",  # division
        "Compute 3 + 4.",  # not the template
        "What is (12 + 3) * 45?",  # the group is not a single-digit factor
        "What is (12 * 30) + 1?",  # a product inside the group without a factor in 2-9
    ],
)
def test_non_canonical_texts_are_rejected(problem):
    assert parse_canonical(problem) is None


def test_samples_are_canonical_distinct_and_correct():
    records = sample_problems(2000, seed=7)
    assert len({r["problem"] for r in records}) == 2000
    counts = Counter()
    negative = with_parens = product_in_group = 0
    for r in records:
        expr = parse_canonical(r["problem"])
        assert expr is not None, r["problem"]
        assert products_ok(expr)
        assert int(r["answer"]) == evaluate(expr) == _oracle(expr.text())
        counts[len(expr.operands)] += 1
        negative += int(r["answer"]) < 0
        with_parens += expr.parens is not None
        if expr.parens:
            lo, hi = expr.parens
            product_in_group += "*" in expr.operators[lo:hi]
    assert set(counts) == {2, 3, 4} and min(counts.values()) > 400
    assert negative > 100 and with_parens > 300 and product_in_group > 50


def test_sampling_is_deterministic_per_seed():
    assert sample_problems(50, seed=3) == sample_problems(50, seed=3)
    assert sample_problems(50, seed=3) != sample_problems(50, seed=4)


def test_text_round_trip():
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(2, 4)
        expr = Expression(
            tuple(rng.randint(2, 9) for _ in range(n)), tuple(rng.choice("+-*") for _ in range(n - 1))
        )
        assert parse_canonical(expr.problem()) == expr


def test_cli_writes_a_benchmark_file(tmp_path, capsys):
    out = tmp_path / "heldout.jsonl"
    assert main(["--n", "20", "--seed", "1", "--out", str(out)]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 20 and set(rows[0]) == {"id", "problem", "answer"}
