"""Final-answer extraction: last balanced box, adjacent boxes, fallbacks, linear time on hostile text."""

from __future__ import annotations

import time

import pytest

from pasodoble.extract import (
    boxed_spans,
    extract_answer,
    extraction_fallbacks,
    last_boxed,
    trailing_boxed,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so \\boxed{5}.", "5"),
        ("\\boxed{1} then \\boxed{2}", "2"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("\\boxed 5 is it", "5"),
        ("\\boxed 5.", "5"),
        ("\\fbox{7}", "7"),
        ("$\\boxed{x^{2}}$", "x^{2}"),
        ("\\boxed{unclosed", None),
        ("\\boxed{a} \\boxed{b", "a"),
        ("\\boxedtext{3}", None),
        ("no box", None),
        ("\\boxed{\\boxed{4}}", "\\boxed{4}"),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def test_boxed_spans_positions():
    text = "a \\boxed{1} b \\boxed{{2}}"
    spans = boxed_spans(text)
    assert [s[2] for s in spans] == ["1", "{2}"]
    assert text[spans[0][0] : spans[0][1]] == "\\boxed{1}"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("x = \\boxed{2} or x = \\boxed{3}", ["3"]),
        ("\\boxed{2}, \\boxed{3}", ["2", "3"]),
        ("$\\boxed{2}$ and $\\boxed{3}$", ["2", "3"]),
        ("\\boxed{2} \\text{ and } \\boxed{3}", ["2", "3"]),
        ("\\boxed{1}\n\nTherefore the final answer is \\boxed{2}", ["2"]),
        ("none", []),
    ],
)
def test_trailing_boxed(text, expected):
    assert trailing_boxed(text) == expected


@pytest.mark.parametrize(
    "text, fallback, expected",
    [
        ("\\boxed{2}, \\boxed{3}", (), "2, 3"),
        ("\\boxed{3} and \\boxed{3}", (), "3"),
        ("She makes 9 * 2 = $18.\n#### 18", ("hashes",), "18"),
        ("#### 1,000\n", ("hashes",), "1,000"),
        ("The answer is 72.", ("answer_is",), "72"),
        ("The answer is $\\frac{1}{2}$. Done", ("answer_is",), "\\frac{1}{2}"),
        ("Final answer: 12", ("answer_is",), "12"),
        ("The answer is 72.", ("hashes",), None),
        ("I get 3 apples and then 45.5 more", ("last_number",), "45.5"),
        ("I get 3 apples and then 45.5 more", (), None),
        ("#### 5\nThe answer is 6", ("answer_is", "hashes"), "6"),
        ("\\boxed{4} #### 5", ("hashes",), "4"),
    ],
)
def test_extract_answer_fallbacks(text, fallback, expected):
    assert extract_answer(text, fallback) == expected


def test_extract_answer_truncates_to_last_chars():
    text = "\\boxed{1}" + "x" * 1000
    assert extract_answer(text, (), max_chars=500) is None
    assert extract_answer(text, (), max_chars=2000) == "1"


def test_unknown_fallback_is_an_error():
    with pytest.raises(ValueError, match="unknown extraction fallback"):
        extract_answer("nothing", ("magic",))


@pytest.mark.parametrize(
    "text",
    [
        "{" * 200_000,
        "\\boxed{" * 50_000,
        "\\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}",
        "The answer is " + "\\(" * 20_000,
        "The answer is $" + "1" * 100_000,
        "1," * 100_000,
        "\\boxed{a}, " * 20_000,
        "".join(f"\\boxed{{{i}}}, " for i in range(20_000)),
    ],
)
def test_extraction_is_fast_on_hostile_text(text):
    t = time.perf_counter()
    extract_answer(text, ("hashes", "answer_is", "last_number"))
    assert time.perf_counter() - t < 1.0


def test_adjacent_box_group_is_capped():
    text = "".join(f"\\boxed{{{i}}}, " for i in range(50))
    assert trailing_boxed(text) == [str(i) for i in range(40, 50)]


def test_extraction_modes():
    assert extraction_fallbacks("strict", ["hashes", "answer_is"]) == ["hashes", "answer_is"]
    assert extraction_fallbacks("flexible", ["hashes", "answer_is"]) == ["hashes", "answer_is", "last_number"]
    assert extraction_fallbacks("flexible", []) == ["last_number"]
    assert extraction_fallbacks("flexible", ["last_number", "hashes"]) == ["last_number", "hashes"]
    with pytest.raises(ValueError, match="unknown extraction mode 'loose'; expected one of strict, flexible"):
        extraction_fallbacks("loose", [])


@pytest.mark.parametrize(
    "text, strict, flexible",
    [
        # GSM8K-style few-shot endings of a base model: no box, "####" or "answer is"
        ("16 - 3 - 4 = 9 eggs, 9 * 2 = 18 dollars.\nA: 18", None, "18"),
        ("So she pays $1,250 in total.", None, "1,250"),
        ("The temperature drops to -4.5 degrees", None, "-4.5"),
        # the strict chain still wins when it finds something
        ("The answer is 12. (Then 13.)", "12", "12"),
        ("\\boxed{5} is checked by 2 + 3", "5", "5"),
        ("Step 1: 7\n#### 8\nextra 9", "8", "8"),
        ("no number here", None, None),
    ],
)
def test_strict_and_flexible_extraction(text, strict, flexible):
    chain = ["hashes", "answer_is"]
    assert extract_answer(text, extraction_fallbacks("strict", chain)) == strict
    assert extract_answer(text, extraction_fallbacks("flexible", chain)) == flexible
