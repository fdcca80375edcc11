"""Issue 22, hostile inputs (second round): one test per class, each with the issue's examples and our own.

Each test name starts with the class it covers (``class1_`` ... ``class12_``, ``also_``). Command-line
cases that need a subprocess are in ``tests/integration/test_hostile_cli.py``.
"""

from __future__ import annotations

import pytest

from pasodoble.verify import answers_equivalent


# ---------------------------------------------------------------------------------------------- class 1
@pytest.mark.parametrize(
    "pred, gold, expected",
    [
        ("4000000000.0", "4000000003", False),  # issue
        ("1234567891.0", "1234567890", False),  # issue
        ("123456789012.5", "123456789012.4", False),  # ours: one tenth apart at 1.2e11
        ("2.0e10", "20000000000", True),  # equal values stay equal at any size
        ("1234567890.0000001", "1234567890", True),  # within 6 decimal places
        ("0.333333", "\\frac{1}{3}", True),  # the documented 6-place rule is unchanged
        ("1e-7", "2e-7", False),  # and the relative rule below 0.01
        ("1.0000000001e-5", "1e-5", True),
    ],
)
def test_class1_large_numbers_compare_exactly(pred, gold, expected):
    assert answers_equivalent(pred, gold) is expected


# ---------------------------------------------------------------------------------------------- class 6
@pytest.mark.parametrize(
    "pred, gold",
    [
        ("\\textbf{(C)} and \\textbf{(D)}", "C"),  # issue
        ("C D E", "C"),  # issue
        ("(C)(D)", "C"),  # issue
        ("C (or maybe D)", "C"),  # issue
        ("6 = 5", "5"),  # issue
        ("2, 2", "2"),  # issue
        ("\\text{(B) or (C)}", "B"),  # ours
        ("(b) (c)", "B"),  # ours: lower-case options in parentheses
        ("2 + 3 = 6", "6"),  # ours: a false equation through math-verify
        ("3, 4", "4"),  # ours: two values for one
        ("x + 1 = 5", "5"),  # ours: a left side that is not a name is a claim (x = 4)
    ],
)
def test_class6_hedged_answers_and_false_equations_match_nothing(pred, gold):
    assert answers_equivalent(pred, gold) is False


@pytest.mark.parametrize(
    "pred, gold",
    [
        ("(C) 12", "C"),
        ("\\textbf{(C)} $\\triangle ABC$", "C"),  # letters inside a word are not options
        ("Option C", "C"),
        ("x = 5", "5"),  # an assignment still matches its value
        ("2 + 3 = 5", "5"),  # a true equation ending in the gold
        ("\\frac{10}{2} = 5", "5"),
        ("-2, 1", "1, -2"),
    ],
)
def test_class6_single_answers_and_true_equations_still_match(pred, gold):
    assert answers_equivalent(pred, gold) is True


# ---------------------------------------------------------------------------------------------- also
@pytest.mark.parametrize(
    "pred, gold",
    [
        ("3²", "3^2"),  # issue
        ("x²", "x^2"),  # issue
        ("10⁶", "10^6"),  # issue
        ("½", "\\frac12"),  # issue
        ("⅓", "\\frac{1}{3}"),  # issue
        ("√(3)", "\\sqrt{3}"),  # issue
        ("\\boxed{1\u200b2}", "12"),  # issue: a zero-width space inside the box
        ("x⁻¹", "\\frac{1}{x}"),  # ours
        ("2½", "\\frac{5}{2}"),  # ours: a mixed number
        ("a₁ + a₂", "a_1 + a_2"),  # ours: subscripts
        ("185\\", "185"),  # issue: a stray backslash
        ("42.\\", "42"),  # ours
    ],
)
def test_also_unicode_forms_and_stray_backslash_match_latex(pred, gold):
    assert answers_equivalent(pred, gold) is True


@pytest.mark.parametrize(
    "pred, gold",
    [
        ("\\sin(x)=\\frac{42}{59}", "\\cos(x)=\\frac{42}{59}"),  # issue: the left sides differ
        ("\\log(y) = 2", "\\ln(y) = 2"),  # ours: log is base 10 in math-verify
        ("3²", "3^3"),
        ("⅔", "\\frac{1}{3}"),
        ("90º", "90^{o}"),  # an ordinal indicator is not a superscript letter
    ],
)
def test_also_equation_left_sides_and_unicode_mismatches(pred, gold):
    assert answers_equivalent(pred, gold) is False
