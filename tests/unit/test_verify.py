"""Answer equivalence (hand-checked verdicts, positive and negative) and the Grader's pool, cache and time bound."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from pasodoble.config import GraderConfig
from pasodoble.verify import Grader, Verdict, answers_equivalent, normalize_answer, quick_check

logging.getLogger("math_verify").setLevel(logging.ERROR)

# (prediction, gold, expected): every verdict checked by hand
CASES = [
    # plain numbers
    ("72", "72", True),
    ("72.0", "72", True),
    ("72.5", "72", False),
    ("-3", "3", False),
    ("0.5", "\\frac{1}{2}", True),
    ("\\frac12", "\\frac{1}{2}", True),
    ("\\dfrac{1}{2}", "\\frac{1}{2}", True),
    ("\\tfrac{3}{4}", "0.75", True),
    ("1/2", "0.5", True),
    ("0.3333", "\\frac{1}{3}", False),
    ("2", "3", False),
    ("1e-7", "2e-7", False),
    ("100", "1000", False),
    # currency, units
    ("\\$6", "6", True),
    ("6", "\\$6", True),
    ("\\$6.00", "6", True),
    ("\\$18", "18", True),
    ("10 \\text{ cm}", "10", True),
    ("10\\text{cm}", "10", True),
    ("10 cm", "10", True),
    ("12 \\text{ square feet}", "12", True),
    ("5\\text{ cm}^2", "5", True),
    ("10 \\text{ cm}", "11", False),
    ("18 dollars", "18", True),
    ("3x", "3", False),
    # thousands separators
    ("10{,}000", "10000", True),
    ("1,000", "1000", True),
    ("1,000", "1", False),
    ("2,125", "2125", True),
    ("2125", "2,125", True),
    ("1,000,000", "1000000", True),
    ("10\\,000", "10000", True),
    ("1,2", "12", False),
    # leading zeros
    ("25", "025", True),
    ("025", "25", True),
    ("073", "73", True),
    ("0.5", "0.50", True),
    ("205", "025", False),
    # degrees, percent
    ("76", "76^\\circ", True),
    ("76^\\circ", "76", True),
    ("76^{\\circ}", "76", True),
    ("30", "60^\\circ", False),
    ("8\\%", "8", True),
    ("8", "8 \\%", True),
    ("8\\%", "0.08", True),
    ("9\\%", "8", False),
    ("50%", "50", True),
    # x = 3
    ("x = 3", "3", True),
    ("3", "x=3", True),
    ("y = 3", "x = 3", True),
    ("x=4", "3", False),
    ("k = 2n-1", "2n-1", True),
    ("f(x) = 2x+1", "2x+1", True),
    # multiple choice
    ("C", "C", True),
    ("(C)", "C", True),
    ("\\text{(C)}", "C", True),
    ("C", "\\text{(C)}", True),
    ("B", "C", False),
    ("(B)", "\\text{(C)}", False),
    ("c", "C", True),
    # wrappers
    ("\\frac{2}{3}", "$\\frac{2}{3}$", True),
    ("$2 \\sqrt{10}$", "$2 \\sqrt{10}$", True),
    ("2\\sqrt{10}", "$2 \\sqrt{10}$", True),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})", True),
    ("(3, \\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
    # text answers
    ("\\text{Monday}", "\\text{Monday}", True),
    ("Monday", "\\text{Monday}", True),
    ("\\text{Tuesday}", "\\text{Monday}", False),
    ("\\text{even}", "\\text{odd}", False),
    ("\\text{Evelyn}", "\\text{Evelyn}", True),
    # python-style (Minerva)
    ("4.5 \\times 10^{33}", "4.5e33", True),
    ("4.5e33", "4.5 \\times 10^{33}", True),
    ("4.6e33", "4.5e33", False),
    ("-\\frac{1}{3}", "-1./3", True),
    ("-0.3333333333", "-1./3", True),
    ("1.24 \\times 10^{-8}", "1.24e-8", True),
    ("1e11", "10^{11}", True),
    ("9e11", "9 \\times 10^{11}", True),
    ("7.353e14", "7.35e14", False),
    # sets / tuples / intervals
    ("2, 3", "3, 2", True),
    ("-2, 1", "1, -2", True),
    ("-2, 1", "-2", False),
    ("1,2", "1,2,3", False),
    ("(1,2)", "(1,2)", True),
    ("[1,2]", "(1,2)", False),
    ("(1,2]", "(1,2)", False),
    ("(2,1)", "(1,2)", False),
    ("(2,12) \\cup (12,102)", "(2,12) \\cup (12,102)", True),
    ("(2,12) \\cup (12,102)", "(2,102)", False),
    ("\\{1, 2\\}", "\\{2, 1\\}", True),
    # symbolic
    ("6+9i", "6+9i", True),
    ("9i+6", "6+9i", True),
    ("2\\sqrt{5}", "\\sqrt{20}", True),
    ("2\\sqrt{5}", "\\sqrt{10}", False),
    ("\\frac{\\sqrt{3}}{2}", "\\frac{1}{2}\\sqrt{3}", True),
    ("x^2+2x+1", "(x+1)^2", True),
    ("x^2+1", "(x+1)^2", False),
    ("\\pi", "3.14159265", True),
    ("\\frac{\\pi}{3}", "\\frac{\\pi}{2}", False),
    ("1+2\\sqrt{3}", "1+2\\sqrt{3}", True),
    ("2516_8", "2516_8", True),
    (
        "\\begin{pmatrix} -1 & 0 \\\\ 0 & -1 \\end{pmatrix}",
        "\\begin{pmatrix} -1 & 0 \\\\ 0 & -1 \\end{pmatrix}",
        True,
    ),
    (
        "\\begin{pmatrix} 1 & 0 \\\\ 0 & -1 \\end{pmatrix}",
        "\\begin{pmatrix} -1 & 0 \\\\ 0 & -1 \\end{pmatrix}",
        False,
    ),
    ("n^2+1", "$n^{2}+1$", True),
    ("2^k", "$2^{k}$", True),
    ("2^{k+1}", "$2^{k}$", False),
    ("\\frac{800}{3}", "$\\frac{800}{3}$", True),
    ("266.67", "$\\frac{800}{3}$", False),
    ("4-2\\sqrt{3}", "$4-2 \\sqrt{3}$", True),
    ("4+2\\sqrt{3}", "$4-2 \\sqrt{3}$", False),
    ("64, \\frac{1}{4}", "$64,\\frac{1}{4}$", True),
    ("64", "$64,\\frac{1}{4}$", False),
    ("\\infty", "\\infty", True),
    ("-\\infty", "\\infty", False),
]
CASES += [
    ("x \\in [1, 2]", "[1,2]", True),
    ("[1,2]", "x \\in [1, 2]", True),
    ("x \\in (1, 2)", "[1,2]", False),
    ("\\frac{\\sqrt{3}}{3}", "\\frac{1}{\\sqrt{3}}", True),
    ("\\frac{\\sqrt{3}}{3}", "\\frac{1}{\\sqrt{2}}", False),
    ("\\begin{bmatrix} 1 \\\\ 2 \\end{bmatrix}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", True),
    ("\\sqrt2", "\\sqrt{2}", True),
    ("\\sqrt{2}/2", "\\frac{\\sqrt{2}}{2}", True),
    ("5\\text{th}", "5", True),
    ("11\\mathrm{th}", "11", True),
    ("\\text{A}", "A", True),
    ("A", "B", False),
    ("(A) 12", "A", True),
    ("\\textbf{(D)}", "D", True),
    ("2 \\text{ and } 3", "2, 3", True),
    ("2 \\text{ or } 3", "2,3", True),
    ("a=1, b=2", "1,2", True),
    ("-1/3", "-\\frac13", True),
    ("\\frac{-1}{3}", "-\\frac{1}{3}", True),
    ("\\frac{1}{-3}", "\\frac{1}{3}", False),
    ("0.1", "10\\%", True),
    ("10", "10\\%", True),
    ("0.1", "10", False),
    ("\\text{no solution}", "\\text{No solution}", True),
    ("\\text{yes}", "\\text{no}", False),
    ("x^2 + 7x + 10", "x^2+7x+10", True),
    ("(x+2)(x+5)", "x^2+7x+10", True),
    ("(x+2)(x+4)", "x^2+7x+10", False),
    ("3\\sqrt{2}", "\\sqrt{18}", True),
    ("\\frac{3}{\\sqrt{2}}", "\\frac{3\\sqrt{2}}{2}", True),
    ("y=2x+3", "2x+3", True),
    ("y = 2x+3", "y=2x+4", False),
    ("1000", "10^3", True),
    ("2^{10}", "1024", True),
    ("2^{10}", "1000", False),
    ("\\$1,000", "1000", True),
    ("\\$1{,}000.50", "1000.5", True),
    ("14{,}000 \\text{ dollars}", "14000", True),
    ("30^\\circ \\text{C}", "30", True),
    ("-2", "-2", True),
    ("- 2", "-2", True),
    ("2", "-2", False),
    ("+2", "2", True),
    ("0", "0", True),
    ("0.0", "0", True),
    ("0", "O", False),
    ("12", "12.", True),
    ("12.", "12", True),
    ("\\frac{a}{b}", "\\frac{a}{b}", True),
    ("\\frac{b}{a}", "\\frac{a}{b}", False),
    ("\\sin^2 x + \\cos^2 x", "1", True),
    ("3.14", "\\pi", False),
    ("3.1416", "\\pi", False),
    ("20\\sqrt{3}", "34.64", False),
    ("1.5", "\\frac{3}{2}", True),
    ("1.50", "1.5", True),
]


@pytest.mark.parametrize("pred, gold, expected", CASES)
def test_answers_equivalent(pred, gold, expected):
    assert answers_equivalent(pred, gold) is expected


@pytest.mark.parametrize(
    "raw, norm",
    [
        ("$\\dfrac{1}{2}$", "\\frac{1}{2}"),
        ("\\left( 1, 2 \\right)", "( 1, 2 )"),
        ("10{,}000", "10000"),
        ("\\$1,234.50", "1234.50"),
        ("025", "25"),
        ("76^\\circ", "76"),
        ("x = 3", "3"),
        ("\\text{Monday}", "Monday"),
        ("4.5e33", "4.5\\times10^{33}"),
        ("-1./3", "-1/3"),
        ("10 \\text{ cm}^2", "10"),
    ],
)
def test_normalize_answer(raw, norm):
    assert normalize_answer(raw) == norm


def test_quick_check_decides_numbers_without_sympy():
    assert quick_check("1,000", "1000") is True
    assert quick_check("1,000", "1") is False
    assert quick_check("x^2", "x\\cdot x") is None  # left to math-verify


@pytest.fixture(scope="module")
def pool_grader():
    g = Grader(GraderConfig(workers=2, timeout_s=1.0, cache_size=0))
    yield g
    g.close()


def test_grade_batch_order_reasons_and_stats():
    g = Grader(GraderConfig(workers=0))
    responses = ["so \\boxed{5}", "nothing here", "\\boxed{4}", "\\boxed{x^2+2x+1}", "#### 1,000"]
    golds = ["5", "5", "5", "(x+1)^2", "1000"]
    got = g.grade_batch(responses, golds)
    assert got == [
        Verdict("5", True, None),
        Verdict(None, False, "no_answer"),
        Verdict("4", False, "mismatch"),
        Verdict("x^2+2x+1", True, None),
        Verdict("1,000", True, None),
    ]
    again = g.grade_batch(responses, golds)
    assert again == got
    assert g.stats.cache_hits >= 4
    assert g.stats.checks == 10 and g.stats.correct == 6
    with pytest.raises(ValueError):
        g.grade_batch(["a"], [])


def test_extracted_mode_and_cache_bound():
    g = Grader(GraderConfig(workers=0, cache_size=2))
    got = g.grade_batch(["$3$", "", "\\boxed{3}"], ["3", "3", "3"], extracted=True)
    assert [v.correct for v in got] == [True, False, True]
    assert got[1].reason == "no_answer"
    assert len(g._cache) <= 2


def test_pool_matches_hand_checked_verdicts():
    with Grader(GraderConfig(workers=2, timeout_s=20.0, cache_size=0)) as g:
        got = g.grade_batch([p for p, _, _ in CASES], [x for _, x, _ in CASES], extracted=True)
        assert g.stats.timeouts == 0
    assert [(p, x, v.correct) for (p, x, _), v in zip(CASES, got, strict=True)] == CASES


ADVERSARIAL = {
    "power_tower": ("\\boxed{10^{10^{10^{10}}}}", "5"),
    "huge_factorial": ("\\boxed{(10^{100})!}", "1"),
    "long_response": ("x" * 200_000 + " \\boxed{3}", "3"),
    "open_braces": ("{" * 200_000, "3"),
    "nested_braces": ("\\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}", "1"),
    "bad_utf8": (b"\xff\xfe \\boxed{4} \xed\xa0\x80".decode("utf-8", errors="surrogateescape"), "4"),
    "replaced_utf8": (b"\xff\\boxed{4}".decode("utf-8", errors="replace"), "4"),
    "frac_chain": ("\\boxed{" + "\\frac{1}{" * 300 + "2" + "}" * 300 + "}", "2"),
}


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_adversarial_bounded_in_main_thread_and_worker_thread(pool_grader, name):
    response, gold = ADVERSARIAL[name]
    bound = pool_grader.cfg.timeout_s + 1.0
    pool_grader.warm_up()  # the bound excludes waiting for a replaced worker to start
    t = time.perf_counter()
    v = pool_grader.grade(response, gold)
    assert time.perf_counter() - t < bound
    assert isinstance(v.correct, bool)
    out = {}

    def work():
        t0 = time.perf_counter()
        out["v"] = pool_grader.grade(response, gold)
        out["t"] = time.perf_counter() - t0

    pool_grader.warm_up()
    th = threading.Thread(target=work)
    th.start()
    th.join(timeout=30)
    assert not th.is_alive()
    assert out["t"] < bound
    assert out["v"].correct == v.correct


def test_timeout_zeroes_only_the_overrunning_pair():
    responses = ["\\boxed{1}", "\\boxed{10^{10^{10^{10}}}}", "\\boxed{x^2 + 2x + 1}", "\\boxed{\\sqrt{8}}"]
    golds = ["1", "3", "(x+1)^2", "2\\sqrt{2}"]
    with Grader(GraderConfig(workers=1, timeout_s=3.0)) as g:  # one worker: the chunk is re-run
        got = g.grade_batch(responses, golds)
        assert g.stats.timeouts == 1 and g.stats.worker_restarts == 1
    assert [v.correct for v in got] == [True, False, True, True]
    assert got[1].reason == "timeout"


def test_surrogates_and_utf8_correct_answers(pool_grader):
    assert pool_grader.grade(ADVERSARIAL["bad_utf8"][0], "4").correct
    assert pool_grader.grade(ADVERSARIAL["long_response"][0], "3").correct


def test_close_and_lazy_restart():
    g = Grader(GraderConfig(workers=1, timeout_s=5.0))
    assert g._workers == []  # lazily created
    assert g.grade("\\boxed{x^2+2x+1}", "(x+1)^2").correct
    assert len(g._workers) == 1
    proc = g._workers[0].proc
    g.close()
    assert not proc.is_alive() and g._workers == []
    with g:
        assert g.grade("\\boxed{\\sqrt{8}}", "2\\sqrt{2}").correct
    assert g._workers == []


# rules added with tests/data/grader_cases.jsonl (see docs/grading.md)
GRADER_SET_RULES = [
    ("2 3", "23", False),  # digits separated by a space are two numbers
    ("1 000", "1000", True),  # plain-space thousands
    ("4 4/9", "40/9", True),  # mixed number
    ("3 1/2", "31/2", False),
    ("0.\\overline{3}", "\\frac{1}{3}", True),  # repeating decimal
    ("1,\\!000", "1000", True),
    ("1,\\!000{,}000", "1000000", True),
    ("Option B", "B", True),
    ("(D) and (E)", "D", False),  # two letters never match one
    ("five", "5", True),
    ("one", "2", False),
    ("\u22127", "-7", True),  # unicode minus
    ("3\u221a2", "3\\sqrt{2}", True),
    ("\u221e", "\\infty", True),
    ("\\varnothing", "\\emptyset", True),
    ("i^2", "-1", True),  # free i is the imaginary unit
    ("2i", "-2i", False),
    ("-2 \\le x \\le 7", "[-2, 7]", True),  # relation vs interval, both directions
    ("y=-2x+4", "2x+y=4", True),
    ("y=-2x+4", "2x+y=8", False),
    (
        "\\begin{pmatrix} -\\frac{7}{4} & -2 \\\\ 4 & \\frac{1}{4} \\end{pmatrix}",
        "\\begin{pmatrix}-1.75&-2\\\\4&0.25\\end{pmatrix}",
        True,
    ),
    ("\\text{The answer is } 5", "5", True),
    ("5", "Adding gives $\\boxed{4}$.", False),  # a gold solution text is its boxed answer
    ("4", "Adding gives $\\boxed{4}$.", True),
]


@pytest.mark.parametrize("pred,gold,expected", GRADER_SET_RULES)
def test_grader_set_rules(pred, gold, expected):
    assert answers_equivalent(pred, gold) is expected


# issue 16: an "=" inside a subscript is not an assignment; only a top-level "x = ..." is stripped
BIG_OPERATOR_CASES = [
    ("\\sum_{k=1}^{3} k", "6", True),  # 1 + 2 + 3
    ("\\sum_{k=1}^{3} k", "1", False),  # was True: "\\sum_{k=" was stripped as "x =", leaving "1}^{3} k"
    ("\\prod_{k=1}^{3} k", "6", True),  # 1 * 2 * 3
    ("\\prod_{k=1}^{3} k", "1", False),
    ("\\sum_{n=1}^{\\infty}\\frac{1}{n^2}", "\\frac{\\pi^2}{6}", True),  # Basel problem
    ("\\sum_{n=1}^{\\infty}\\frac{1}{n^2}", "1", False),
    ("\\lim_{x=0} (x+1)", "1", True),
    ("\\lim_{x=0} (x+1)", "0", False),
    ("\\lim_{x \\to 0}\\frac{\\sin x}{x}", "1", True),
    ("\\lim_{x \\to 0}\\frac{\\sin x}{x}", "0", False),
    ("\\int_{x=0}^{1} x\\,dx", "\\frac{1}{2}", True),
    ("\\int_{x=0}^{1} x\\,dx", "0", False),  # was True: math-verify reads "x=0" as the value 0
    ("\\sum_{k=0}^{10} 2^k", "2047", True),
    ("\\sum_{k=0}^{10} 2^k", "2048", False),
    ("x = \\sum_{k=1}^{4} k", "10", True),  # a top-level assignment whose value has "=" inside braces
    ("x = \\sum_{k=1}^{4} k", "4", False),
    ("a_{1} = 5", "5", True),  # balanced subscript on the assigned name
]


@pytest.mark.parametrize("pred,gold,expected", BIG_OPERATOR_CASES)
def test_equals_inside_braces_is_not_an_assignment(pred, gold, expected):
    assert answers_equivalent(pred, gold) is expected


@pytest.mark.parametrize(
    "raw,norm",
    [
        ("\\sum_{k=1}^{3} k", "\\sum_{k=1}^{3} k"),
        ("\\lim_{x=0} x", "\\lim_{x\\to 0} x"),  # an informal "x -> 0"
        ("x = \\sum_{k=1}^{3} k", "\\sum_{k=1}^{3} k"),
        ("x_{1} = 3", "3"),
        ("f(x) = 2x", "2x"),
    ],
)
def test_assignment_stripping_is_top_level_only(raw, norm):
    assert normalize_answer(raw) == norm


# issue 16: answers were compared by their first grader.max_answer_chars (1,000) characters
_LIST_2000 = ", ".join(str(i) for i in range(2000))
_LIST_2000_LAST_CHANGED = ", ".join(str(i) for i in range(1999)) + ", 5000"


@pytest.mark.parametrize("workers", [0, 1])
def test_long_answers_are_never_compared_by_a_prefix(workers):
    with Grader(GraderConfig(workers=workers, timeout_s=10.0)) as g:
        preds = ["7" * 5000, _LIST_2000_LAST_CHANGED, _LIST_2000, "7" * 1000]
        golds = ["7" * 1000, _LIST_2000, _LIST_2000, "7" * 1000]
        got = g.grade_batch(preds, golds, extracted=True)
        # the same, extracted from full responses
        boxed = g.grade_batch(["so \\boxed{" + p + "}" for p in preds], golds)
    assert [(v.correct, v.reason) for v in got] == [
        (False, "too_long"),
        (False, "too_long"),
        (True, None),  # identical in full
        (True, None),  # exactly at the cap: compared as usual
    ]
    assert [(v.correct, v.reason) for v in boxed] == [(v.correct, v.reason) for v in got]
    assert got[0].pred == "7" * 5000  # the verdict reports the whole answer, not a prefix
    assert g.stats.reasons["too_long"] == 4


def test_long_answers_in_process_helpers():
    assert answers_equivalent("7" * 5000, "7" * 1000) is False
    assert answers_equivalent("7" * 1000, "7" * 5000) is False
    assert answers_equivalent(_LIST_2000_LAST_CHANGED, _LIST_2000) is False
    assert answers_equivalent(_LIST_2000, " " + _LIST_2000 + " ") is True


def test_long_gold_solution_is_reduced_to_its_box_before_the_length_cap():
    gold = "We add them all. " + "Then we simplify. " * 100 + "So the total is $\\boxed{42}$."
    assert len(gold) > 1000
    with Grader(GraderConfig(workers=0)) as g:
        assert g.grade("\\boxed{42}", gold).correct
        assert not g.grade("\\boxed{41}", gold).correct


def test_operators_are_evaluated_before_math_verify():
    """math-verify takes seconds on an unevaluated infinite sum; its closed form compares in milliseconds."""
    import sympy

    from pasodoble.verify import _with_operators_evaluated

    k, n = sympy.symbols("k n")
    out = _with_operators_evaluated(
        [sympy.Sum(1 / n**2, (n, 1, sympy.oo)) + sympy.Product(k, (k, 1, 3)), "latex"]
    )
    assert out == [sympy.pi**2 / 6 + 6, "latex"]
    assert _with_operators_evaluated([sympy.Integer(2), "2"]) == [2, "2"]


def test_grade_batch_extraction_modes():
    responses = ["9 * 2 = 18 dollars.\nA: 18", "A: 19", "\\boxed{18} (checked: 2)"]
    with Grader(GraderConfig(workers=0)) as g:
        strict = g.grade_batch(responses, ["18"] * 3)
        flexible = g.grade_batch(responses, ["18"] * 3, extract="flexible")
        assert g.grade("A: 18", "18", extract="flexible").correct
        with pytest.raises(ValueError, match="unknown extraction mode 'loose'"):
            g.grade_batch(["1"], ["1"], extracted=True, extract="loose")
    assert strict == [
        Verdict(None, False, "no_answer"),
        Verdict(None, False, "no_answer"),
        Verdict("18", True, None),
    ]
    assert flexible == [
        Verdict("18", True, None),
        Verdict("19", False, "mismatch"),
        Verdict("18", True, None),
    ]
