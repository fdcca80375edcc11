"""Answer grading: is a model's final answer equivalent to the gold answer?

Three layers, cheapest first (``docs/grading.md`` has the full rule list):

1. ``normalize_answer``: a string normalization (``$...$``, ``\\left``/``\\right``, ``\\dfrac``, units,
   currency, degrees, percent, thousands separators, leading zeros, ``x =`` prefixes, Python-style
   numbers). Equal normalized strings are equivalent.
2. A numeric fast path: when both sides are plain numbers (integers, decimals, scientific notation,
   ``\\frac{a}{b}`` with numeric a and b) the verdict is decided here by relative tolerance, without
   sympy. Multiple-choice letters and comma-separated lists of numbers are also decided here.
3. math-verify (``parse`` + ``verify``) on the normalized strings for everything else.

Layers 1 and 2 are pure string work, linear in the (truncated) answer length, and run in the calling
process. Layer 3 can take unbounded time on adversarial input (sympy), so ``Grader`` runs it in a pool
of worker processes, started with ``spawn`` (safe when torch is loaded), and kills and replaces a
worker whose current check overruns ``timeout_s``: that one check is false with reason ``timeout``.
"""

from __future__ import annotations

import atexit
import logging
import math
import multiprocessing as mp
import re
import sys
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from multiprocessing.connection import wait as _mp_wait

from pasodoble.config import GraderConfig
from pasodoble.extract import extract_answer

__all__ = [
    "Grader",
    "GraderStats",
    "Verdict",
    "answers_equivalent",
    "check_pair",
    "extract_answer",
    "normalize_answer",
]

log = logging.getLogger(__name__)

REASONS = ("no_answer", "mismatch", "timeout", "parse_error")

# --------------------------------------------------------------------------------------------------
# Layer 1: string normalization (all regexes below are linear: no nested or adjacent ambiguous repeats
# over unbounded input, and inputs are already truncated to max_answer_chars).
# --------------------------------------------------------------------------------------------------

_UNIT_WORDS = (
    "mm|cm|km|m|meters?|metres?|centimeters?|millimeters?|kilometers?|inches|inch|in|feet|foot|ft|"
    "yards?|yd|miles?|mi|seconds?|secs?|s|minutes?|mins?|hours?|hrs?|days?|weeks?|months?|years?|"
    "dollars?|cents?|euros?|pounds?|lbs?|lb|ounces?|oz|grams?|g|kg|kilograms?|mg|liters?|litres?|l|L|"
    "ml|mL|gallons?|degrees?|units?|sq|square|cubic|mph|km/h|m/s|percent|points?|people|persons?|"
    "students?|times|ways?|pages?|boxes|books?|eggs?|apples?|hrs|hr|deg|rad|radians?"
)
# a number followed by unit words, e.g. "10 cm", "5 square feet", "3 cm^2"
_TRAILING_UNITS_RE = re.compile(
    r"^(-?[\d.,]+(?:\\times10\^\{?-?\d+\}?)?)\s*(?:(?:" + _UNIT_WORDS + r")\b\.?\s*){1,3}(?:\^\{?[23]\}?)?$"
)
_TEXT_MACRO_RE = re.compile(
    r"\\(?:text|textbf|textit|textnormal|textsf|mbox|mathrm|mathbf|textrm|operatorname)\s*\{([^{}]*)\}"
)
_SPACING_RE = re.compile(r"(?<!\\)\\[,:;! ]|\\q?quad\b|~|\\displaystyle|\\limits")
_LEFT_RIGHT_RE = re.compile(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|big|Big)(?![A-Za-z])\s*\.?")
_DEGREE_RE = re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|°|\\degree\b|\\circ\b")
_PERCENT_RE = re.compile(r"\\?%")
_THOUSANDS_RE = re.compile(r"(?<![\d.,])(\d{1,3})((?:,\d{3})+)(?![\d,])")
_THOUSANDS_BRACE_RE = re.compile(r"(\d)\{,\}(\d)")
_THOUSANDS_SPACE_RE = re.compile(r"(?<![\d.])(\d{1,3})((?:\\[,!]\d{3})+)(?![\d])")
_LEADING_ZERO_RE = re.compile(r"(?<![\d.])0+(\d)")
_SCI_RE = re.compile(r"(?<![\w.])(-?\d+(?:\.\d*)?|-?\.\d+)[eE]([-+]?\d+)(?![\w.])")
_SCI_TIMES_RE = re.compile(r"(-?\d+(?:\.\d*)?)\s*(?:\\times|\\cdot|\*|x)\s*10\s*\^\s*\{?\s*([-+]?\d+)\s*\}?")
_TRAILING_DOT_NUM_RE = re.compile(r"(\d)\.(?![\d]|\\overline)")
_ASSIGN_RE = re.compile(
    r"^(?:[A-Za-z](?:_\{?[A-Za-z0-9]{1,3}\}?)?|\\[A-Za-z]{2,10}(?:_\{?[A-Za-z0-9]{1,3}\}?)?)"
    r"(?:\([A-Za-z, ]{1,10}\))?\s*(?:=|\\approx)\s*"
)
_DFRAC_RE = re.compile(r"\\[dt]frac(?![A-Za-z])")
_FRAC_SHORT_RE = re.compile(r"\\frac\s*(\d)\s*(\d)")
_MC_RE = re.compile(r"^\(?([A-Ea-e])\)?(?:\s|$|[.:)])")
_CURRENCY_RE = re.compile(r"\\\$|\$|\\(?:text)?dollar|USD|Rs\.?|\\euro|€|£")


# unicode math symbols models emit -> LaTeX (applied before everything else)
_UNICODE_MAP = {
    "\u2212": "-",  # minus sign
    "\u221e": "\\infty ",
    "\u03c0": "\\pi ",
    "\u00d7": "\\times ",
    "\u00b7": "\\cdot ",
    "\u2264": "\\le ",
    "\u2265": "\\ge ",
    "\u2260": "\\ne ",
    "\u2205": "\\emptyset ",
    "\u00b1": "\\pm ",
}
_UNICODE_RE = re.compile("[" + "".join(_UNICODE_MAP) + "]")
_UNICODE_SQRT_RE = re.compile(r"\u221a\s*(\d+|[A-Za-z])?")
_EMPTYSET_RE = re.compile(r"\\varnothing\b|^\\\{\s*\\\}$|^\{\s*\}$")
# "1,\!000" and "1,\,000": a comma followed by a spacing macro inside a number
_COMMA_SPACING_RE = re.compile(r"(\d),\s*\\[!,]\s*(?=\d)")
# "1 000 000": plain-space thousands groups (a lone "2 3" stays two numbers)
_THOUSANDS_PLAIN_SPACE_RE = re.compile(r"(?<![\d.,/])(\d{1,3})((?: \d{3})+)(?![\d/.])")
# a leading prose prefix inside the answer: "\text{The answer is } 5"
_TEXT_PREFIX_RE = re.compile(
    r"^\\(?:text|mbox|textrm)\s*\{[^{}]{0,60}?\b(?:is|are|equals|answer)\s*:?\s*\}\s*"
)
_NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split()
    )
}
_NUMBER_WORDS.update(
    {
        "thirty": "30",
        "forty": "40",
        "fifty": "50",
        "sixty": "60",
        "seventy": "70",
        "eighty": "80",
        "ninety": "90",
    }
)
_NUMBER_WORDS.update({"hundred": "100", "thousand": "1000", "a hundred": "100", "one hundred": "100"})


def _unicode_to_latex(s: str) -> str:
    if s.isascii():
        return s
    s = _UNICODE_SQRT_RE.sub(lambda m: "\\sqrt{" + m.group(1) + "}" if m.group(1) else "\\sqrt", s)
    return _UNICODE_RE.sub(lambda m: _UNICODE_MAP[m.group()], s)


def _strip_outer(s: str) -> str:
    """Remove ``$...$``/``\\(...\\)``/``\\[...\\]`` wrappers and nested ``\\boxed{...}`` around a whole answer."""
    for _ in range(5):
        t = s.strip()
        if t.startswith("$$") and t.endswith("$$") and len(t) >= 4:
            t = t[2:-2]
        elif t.startswith("$") and t.endswith("$") and len(t) >= 2:
            t = t[1:-1]
        elif (t.startswith("\\(") and t.endswith("\\)")) or (t.startswith("\\[") and t.endswith("\\]")):
            t = t[2:-2]
        for macro in ("\\boxed{", "\\fbox{"):
            if t.startswith(macro) and t.endswith("}") and _balanced(t[len(macro) : -1]):
                t = t[len(macro) : -1]
        if t == s:
            break
        s = t
    return s.strip()


def _balanced(s: str) -> bool:
    depth = 0
    for ch in s:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth < 0:
                return False
    return depth == 0


def _sci_sub(m: re.Match) -> str:
    mant, exp = m.group(1), m.group(2)
    if mant.endswith("."):
        mant = mant[:-1]
    return f"{mant}\\times10^{{{int(exp)}}}"


def normalize_answer(s: str) -> str:
    """Canonical string form of an answer for the cheap equality test (and for math-verify's parser).

    Idempotent-ish and conservative: it never merges two answers that differ mathematically except by
    units, currency, degree and percent signs, which it drops.
    """
    s = _strip_outer(_unicode_to_latex(s))
    s = s.replace("\n", " ").replace("\\\\!", "")
    s = _COMMA_SPACING_RE.sub(r"\1,", s)
    s = _DFRAC_RE.sub(r"\\frac", s)
    s = _FRAC_SHORT_RE.sub(r"\\frac{\1}{\2}", s)
    s = _LEFT_RIGHT_RE.sub("", s)
    s = _THOUSANDS_SPACE_RE.sub(lambda mm: mm.group(1) + re.sub(r"\\[,!]", "", mm.group(2)), s)
    s = _SPACING_RE.sub(" ", s)
    s = _DEGREE_RE.sub("", s)
    s = _PERCENT_RE.sub("", s)
    s = _CURRENCY_RE.sub("", s)
    s = s.replace("np.", "").replace("math.", "").replace("**", "^")
    # \text{...}: a unit after a number is dropped, a text-only answer is unwrapped
    s = s.strip()
    s = _TEXT_PREFIX_RE.sub("", s)
    m = _TEXT_MACRO_RE.fullmatch(s)
    if m:
        s = m.group(1).strip()
    else:
        s = _drop_trailing_text(s)
        s = _TEXT_MACRO_RE.sub(lambda mm: mm.group(1), s)
    s = s.strip().rstrip(".").strip()
    s = _strip_outer(s)
    m = _ASSIGN_RE.match(s)
    if m and "=" not in s[m.end() :] and m.end() < len(s):
        s = s[m.end() :]
    s = _THOUSANDS_BRACE_RE.sub(r"\1,\2", s)
    s = _THOUSANDS_RE.sub(lambda mm: mm.group(1) + mm.group(2).replace(",", ""), s)
    s = _SCI_RE.sub(_sci_sub, s)
    s = _SCI_TIMES_RE.sub(lambda mm: f"{mm.group(1)}\\times10^{{{int(mm.group(2))}}}", s)
    s = _TRAILING_DOT_NUM_RE.sub(r"\1", s)
    s = " ".join(s.split())
    m = _TRAILING_UNITS_RE.match(s)
    if m:
        s = m.group(1)
    s = _THOUSANDS_PLAIN_SPACE_RE.sub(lambda mm: mm.group(1) + mm.group(2).replace(" ", ""), s)
    s = _LEADING_ZERO_RE.sub(r"\1", s)
    s = _EMPTYSET_RE.sub(r"\\emptyset", s.strip())
    word = _NUMBER_WORDS.get(s.lower())
    if word is not None:
        s = word
    return s.strip()


_TRAILING_TEXT_RE = re.compile(
    r"\\(?:text|mbox|mathrm|textrm)\s*\{\s*[A-Za-z][A-Za-z .]{0,40}\}(?:\s*\^\s*\{?[23]\}?)?$"
)


def _drop_trailing_text(s: str) -> str:
    """``10 \\text{ cm}`` -> ``10``: a text macro at the end, after something that is not text, is a unit."""
    for _ in range(3):
        m = _TRAILING_TEXT_RE.search(s)
        if not m or m.start() == 0:
            break
        head = s[: m.start()].rstrip()
        if not head or head.endswith(("=", "\\in", ",")):
            break
        s = head
    return s


_DIGIT_SPACE_RE = re.compile(r"(?<=\d)\s+(?=\d)")


def _compact(s: str) -> str:
    """Whitespace-free form used for the equality test.

    Whitespace between two digits is kept (as one space): ``2 3`` is two numbers, not ``23``. Thousands
    groups (``1 000``) are joined by ``normalize_answer`` before this.
    """
    return "".join(_DIGIT_SPACE_RE.sub("\x00", s).split()).replace("\x00", " ")


# --------------------------------------------------------------------------------------------------
# Layer 2: numbers, letters and lists decided without sympy
# --------------------------------------------------------------------------------------------------

_NUM_RE = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")
_FRAC_NUM_RE = re.compile(r"(-?)\\frac\{(-?(?:\d+(?:\.\d*)?|\.\d+))\}\{(-?(?:\d+(?:\.\d*)?|\.\d+))\}")
_SLASH_RE = re.compile(r"(-?(?:\d+(?:\.\d*)?|\.\d+))/(-?(?:\d+(?:\.\d*)?|\.\d+))")
_SCI_NORM_RE = re.compile(r"(-?(?:\d+(?:\.\d*)?|\.\d+))\\times10\^\{(-?\d+)\}")
_POW10_RE = re.compile(r"10\^\{(-?\d+)\}")


# "4 4/9", "2\\frac{1}{3}": a whole number and a proper fraction (checked before compaction)
_MIXED_RE = re.compile(r"(-?)(\d{1,9})(?:\s+(\d{1,9})/(\d{1,9})|\s*\\frac\{(\d{1,9})\}\{(\d{1,9})\})")
# "0.\\overline{3}", "0.1\\overline{6}": repeating decimals
_REPEAT_RE = re.compile(r"(-?)(\d{0,12})\.(\d{0,12})\\overline\{(\d{1,12})\}")


def _mixed_number(s: str) -> Fraction | None:
    m = _MIXED_RE.fullmatch(s.strip())
    if not m:
        return None
    whole = int(m.group(2))
    num, den = (int(m.group(3)), int(m.group(4))) if m.group(3) else (int(m.group(5)), int(m.group(6)))
    if den == 0 or not 0 < num < den:  # "4 6/6", "11 7/6" are not mixed numbers
        return None
    v = whole + Fraction(num, den)
    return -v if m.group(1) else v


def _repeating_decimal(s: str) -> Fraction | None:
    m = _REPEAT_RE.fullmatch(s)
    if not m:
        return None
    head, pre, rep = m.group(2) or "0", m.group(3), m.group(4)
    v = int(head) + (Fraction(int(pre), 10 ** len(pre)) if pre else 0)
    v += Fraction(int(rep), (10 ** len(rep) - 1) * 10 ** len(pre))
    return -v if m.group(1) else v


def as_number(s: str) -> Fraction | None:
    """The value of a normalized plain-number answer (exact), or None when it is not one."""
    mixed = _mixed_number(s)
    if mixed is not None:
        return mixed
    c = _compact(s)
    if not c or len(c) > 60 or " " in c:
        return None
    try:
        rd = _repeating_decimal(c)
        if rd is not None:
            return rd
        if _NUM_RE.fullmatch(c):
            return Fraction(c)
        m = _FRAC_NUM_RE.fullmatch(c)
        if m:
            v = Fraction(m.group(2)) / Fraction(m.group(3))
            return -v if m.group(1) else v
        m = _SLASH_RE.fullmatch(c)
        if m:
            return Fraction(m.group(1)) / Fraction(m.group(2))
        m = _SCI_NORM_RE.fullmatch(c)
        if m and abs(int(m.group(2))) <= 400:
            return Fraction(m.group(1)) * Fraction(10) ** int(m.group(2))
        m = _POW10_RE.fullmatch(c)
        if m and abs(int(m.group(1))) <= 400:
            return Fraction(10) ** int(m.group(1))
    except (ValueError, ZeroDivisionError):
        return None
    return None


def numbers_close(a: Fraction, b: Fraction, *, exact: bool = False) -> bool:
    """math-verify's numeric rule, minus its false positives on tiny numbers.

    Two exact numbers (integers, fractions) must be equal. When either was written as a decimal, they
    are equal if they agree to 6 decimal places (``0.333333`` = ``1/3``, as in math-verify) for numbers of
    magnitude >= 0.01, or to a relative 1e-9 (so ``1e-7`` != ``2e-7``, which 6-decimal rounding merges).
    """
    if a == b:
        return True
    if exact:
        return False
    scale = max(abs(a), abs(b))
    if abs(a - b) <= Fraction(1, 10**9) * scale:
        return True
    return scale >= Fraction(1, 100) and round(a, 6) == round(b, 6)


def _is_exact_literal(s: str) -> bool:
    return "." not in s or "\\overline" in s


def _split_top_level(s: str) -> list[str]:
    """Split on commas outside braces, parentheses and brackets (linear)."""
    parts, depth, cur = [], 0, []
    for ch in s:
        if ch in "{([":
            depth += 1
        elif ch in "})]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts]


_MC_PREFIX_RE = re.compile(r"^(?:option|choice|answer)\s*:?\s*", re.IGNORECASE)
# a second option letter after the first: "(D) and (E)", "A, C", "B or C"
_MC_SECOND_RE = re.compile(r"^\s*(?:,|;|&|and\b|or\b|/)\s*\(?[A-Ea-e]\)?(?:\s|$|[.,:)])")
_MC_AMBIGUOUS = "?"


def _mc_letter(raw: str) -> str | None:
    """Multiple-choice letter of an answer such as ``C``, ``(C)``, ``\\text{(C)}``, ``(C) 12``, ``Option C``.

    Two letters (``(D) and (E)``, ``A, C``) give ``"?"``, which matches no gold letter.
    """
    s = _MC_PREFIX_RE.sub("", _strip_outer(raw).strip())
    m = _TEXT_MACRO_RE.fullmatch(s.strip())
    if m:
        s = m.group(1)
    s = s.strip()
    if s.startswith("\\textbf{") or s.startswith("\\mathrm{"):
        s = s[8:].lstrip("{")
    m = _MC_RE.match(s + " ")
    if not m:
        return None
    rest = s[m.end() - 1 :] if m.group(0)[-1:] in ".:)" else s[m.end() :]
    if _MC_SECOND_RE.match(rest.lstrip(".:)") + " "):
        return _MC_AMBIGUOUS
    return m.group(1).upper()


_GOLD_MC_RE = re.compile(r"^\(?[A-E]\)?$")


def _gold_is_letter(gold_raw: str) -> str | None:
    s = _strip_outer(gold_raw)
    m = _TEXT_MACRO_RE.fullmatch(s)
    if m:
        s = m.group(1)
    s = "".join(s.split())
    if s.startswith("\\textbf{") and s.endswith("}"):
        s = s[8:-1]
    return s.strip("()")[:1] if _GOLD_MC_RE.fullmatch(s) else None


def quick_check(pred: str, gold: str) -> bool | None:
    """Verdict of layers 1 and 2: True/False when decided without sympy, None when math-verify must decide.

    Pure string work, linear in the input length. Inputs are raw (unnormalized) answers.
    """
    if _compact(pred) == _compact(gold) and pred.strip():
        return True
    letter = _gold_is_letter(gold)
    if letter is not None:
        p = _mc_letter(pred)
        if p is not None:
            return p == letter
    p, g = normalize_answer(pred), normalize_answer(gold)
    if not p:
        return False
    pc, gc = _compact(p), _compact(g)
    if pc == gc:
        return True
    if pc.lower() == gc.lower() and re.fullmatch(r"[A-Za-z ]{2,}", p) and re.fullmatch(r"[A-Za-z ]{2,}", g):
        return True
    pn, gn = as_number(p), as_number(g)
    if pn is not None and gn is not None:
        exact = _is_exact_literal(p) and _is_exact_literal(g)
        if numbers_close(pn, gn, exact=exact):
            return True
        if _PERCENT_RE.search(pred) or _PERCENT_RE.search(gold):
            return numbers_close(pn * 100, gn, exact=exact) or numbers_close(pn, gn * 100, exact=exact)
        return False
    # comma-separated lists of plain numbers (sets of solutions): compare as multisets
    gparts = _split_top_level(g) if "," in g else []
    if len(gparts) >= 2 and "," in p:
        pparts = _split_top_level(p)
        gnums = [as_number(x) for x in gparts]
        pnums = [as_number(x) for x in pparts]
        if all(x is not None for x in gnums) and all(x is not None for x in pnums):
            exact = _is_exact_literal(p) and _is_exact_literal(g)
            if len(gnums) != len(pnums):
                return False
            remaining = list(gnums)
            for x in pnums:
                hit = next((i for i, y in enumerate(remaining) if numbers_close(x, y, exact=exact)), None)
                if hit is None:
                    return False
                remaining.pop(hit)
            return True
    if (pn is None) != (gn is None) and (pn is not None or gn is not None):
        # one side a plain number, the other not: only math-verify can tell (e.g. 0.5 vs 1/\sqrt{4})
        return None
    return None


# --------------------------------------------------------------------------------------------------
# Layer 3: math-verify
# --------------------------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _mv_parse(s: str, mv_timeout: int | None):
    """math-verify parse of one answer (cached: the same gold is checked against many attempts)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    cfg = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    return parse(
        "\\boxed{" + s + "}", extraction_config=cfg, parsing_timeout=mv_timeout, raise_on_error=False
    )


def _mv_equal(pred: str, gold: str, mv_timeout: int | None) -> bool:
    from math_verify import verify

    g = _mv_parse(gold, mv_timeout)
    p = _mv_parse(pred, mv_timeout)
    if not g or not p:
        return False
    if not _surely_different(g[0], p[0]) and verify(
        g, p, timeout_seconds=mv_timeout, raise_on_error=False, allow_set_relation_comp=True
    ):
        return True
    # a free symbol "i" on either side is read as the imaginary unit (i^2 = -1, \\frac{1+i}{2} = 0.5+0.5i)
    g2, p2 = _with_imaginary_unit(g), _with_imaginary_unit(p)
    if g2 is None and p2 is None:
        return False
    g, p = g2 or g, p2 or p
    if _surely_different(g[0], p[0]):
        return False
    return bool(verify(g, p, timeout_seconds=mv_timeout, raise_on_error=False, allow_set_relation_comp=True))


def _with_imaginary_unit(parsed):
    """``parsed`` with the free symbol ``i`` replaced by sympy's ``I``; None when it has no such symbol."""
    import sympy

    out, changed = [], False
    for x in parsed:
        syms = [v for v in getattr(x, "free_symbols", ()) if getattr(v, "name", None) == "i"]
        if isinstance(x, sympy.Basic) and syms:
            try:
                x = x.xreplace(dict.fromkeys(syms, sympy.I))
                changed = True
            except Exception:
                return None
        out.append(x)
    return out if changed else None


_PROBE_POINTS = (
    (0.5772156649, 1.3247179572, 0.7390851332, 1.6180339887),
    (2.2360679775, 0.3183098862, 1.4142135624, 0.6931471806),
)


def _surely_different(a, b) -> bool:
    """Cheap proof that two parsed plain expressions differ: they disagree at two numeric points.

    math-verify's expensive path for a mismatch is ``simplify(a - b)``; two expressions that take
    different values somewhere cannot simplify to the same thing. Applied only to plain expressions
    (no relations, sets, tuples, matrices, floats or undefined functions) with the same free symbols,
    so math-verify's special rules (float rounding, assignments, symbol matching) are never bypassed.
    """
    import sympy

    try:
        for x in (a, b):
            if not isinstance(x, sympy.Expr) or isinstance(x, (sympy.Tuple, sympy.MatrixBase)):
                return False
            if x.atoms(sympy.Float) or x.atoms(sympy.core.function.AppliedUndef):
                return False
            if (
                x.has(sympy.UnevaluatedExpr)
                or x.has(sympy.Order)
                or x.has(sympy.oo, -sympy.oo, sympy.zoo, sympy.nan)
            ):
                return False
        syms = sorted(a.free_symbols | b.free_symbols, key=str)
        if a.free_symbols != b.free_symbols or len(syms) > 4:
            return False
        for point in _PROBE_POINTS:
            sub = {sym: sympy.Float(point[i]) for i, sym in enumerate(syms)}
            va = complex(a.evalf(15, subs=sub))
            vb = complex(b.evalf(15, subs=sub))
            if not all(map(math.isfinite, (va.real, va.imag, vb.real, vb.imag))):
                return False
            if abs(va - vb) <= 1e-6 * (1.0 + abs(va) + abs(vb)):
                return False
        return True
    except Exception:
        return False


def _mv_equivalent(pred: str, gold: str, mv_timeout: int | None) -> bool:
    """math-verify on the normalized answers; the raw form is tried only where normalizing broke parsing."""
    g, p = normalize_answer(gold), normalize_answer(pred)
    if not _mv_parse(g, mv_timeout):
        g = _strip_outer(gold)
    if not _mv_parse(p, mv_timeout):
        p = _strip_outer(pred)
    if _mv_equal(p, g, mv_timeout):
        return True
    # both sides are equations but normalizing dropped a "y =" from only one: compare the equations
    gr, pr = _strip_outer(gold), _strip_outer(pred)
    if "=" in gr and "=" in pr and (gr, pr) != (g, p):
        return _mv_equal(pr, gr, mv_timeout)
    return False


def check_pair(
    pred: str | None, gold: str, max_answer_chars: int = 1000, mv_timeout: int | None = None
) -> tuple[bool, str | None]:
    """Full in-process check of an extracted answer: (correct, reason).

    ``mv_timeout``: math-verify's own signal-based timeout in whole seconds (main thread only); None
    disables it, leaving the check unbounded (workers are bounded by being killed instead).
    """
    if pred is None or not pred.strip():
        return False, "no_answer"
    pred = pred[:max_answer_chars]
    gold = gold[:max_answer_chars]
    q = quick_check(pred, gold)
    if q is not None:
        return q, (None if q else "mismatch")
    try:
        if _mv_equivalent(pred, gold, mv_timeout):
            return True, None
    except Exception:  # sympy and the LaTeX parser raise many kinds of errors on odd input
        log.debug("math-verify failed", exc_info=True)
        return False, "parse_error"
    return False, "mismatch"


def answers_equivalent(pred: str, gold: str, *, timeout_s: float = 5.0) -> bool:
    """In-process equivalence of two extracted answers (``pred`` first, then ``gold``).

    Bounded only by math-verify's own signal timeout, which works in the main thread only; from other
    threads the check runs without a bound: use ``Grader`` (worker processes) for a hard bound.
    """
    return check_pair(pred, _gold_answer(gold), mv_timeout=_main_thread_timeout(timeout_s))[0]


def _main_thread_timeout(timeout_s: float) -> int | None:
    if threading.current_thread() is threading.main_thread():
        return max(1, math.ceil(timeout_s))
    return None


# --------------------------------------------------------------------------------------------------
# Grader: extraction, cache, worker pool with a hard wall-clock bound
# --------------------------------------------------------------------------------------------------


@dataclass
class Verdict:
    """The grade of one response: the extracted answer, whether it is correct, and why not."""

    pred: str | None
    correct: bool
    reason: str | None  # None when correct, else 'no_answer' | 'mismatch' | 'timeout' | 'parse_error'


@dataclass
class GraderStats:
    """Counters since the grader was created."""

    checks: int = 0
    correct: int = 0
    cache_hits: int = 0
    fast_path: int = 0
    slow_path: int = 0
    timeouts: int = 0
    errors: int = 0
    no_answer: int = 0
    worker_restarts: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        d = {k: v for k, v in self.__dict__.items() if k != "reasons"}
        return d


def _worker_main(conn, max_answer_chars: int) -> None:  # pragma: no cover - runs in a child process
    """Worker loop: receive chunks of (idx, pred, gold), send (idx, correct, reason) per pair."""
    import logging as _logging

    _logging.getLogger("math_verify").setLevel(_logging.ERROR)
    _logging.getLogger("latex2sympy2_extended").setLevel(_logging.ERROR)
    # import the heavy parts before announcing readiness, so no check pays for them
    import math_verify  # noqa: F401

    _mv_parse("1", None)
    conn.send(("ready",))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        for idx, pred, gold in msg:
            try:
                ok, reason = check_pair(pred, gold, max_answer_chars)
            except Exception:
                ok, reason = False, "parse_error"
            conn.send((idx, ok, reason))


_START_LOCK = threading.Lock()


def _start_without_main(proc) -> None:
    """Start a ``spawn`` process without re-running the parent's ``__main__`` module in the child.

    The worker needs only this module; re-importing a user's script (which may call the grader at top
    level, without an ``if __name__ == "__main__"`` guard) would recurse. The spawn preparation data
    names the main module through ``__spec__``/``__file__``, so both are hidden while it is written.
    """
    main = sys.modules.get("__main__")
    with _START_LOCK:
        if main is None:
            proc.start()
            return
        saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__}
        try:
            main.__dict__.pop("__file__", None)
            main.__dict__["__spec__"] = None
            proc.start()
        finally:
            main.__dict__.pop("__spec__", None)
            main.__dict__.update(saved)


class _Worker:
    def __init__(self, ctx, max_answer_chars: int):
        parent, child = ctx.Pipe(duplex=True)
        self.conn = parent
        self.proc = ctx.Process(target=_worker_main, args=(child, max_answer_chars), daemon=True)
        _start_without_main(self.proc)
        child.close()
        self.ready = False
        self.started_at = time.monotonic()
        self.busy: deque[int] = deque()  # item indices sent, in order
        self.item_start = 0.0

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.join(timeout=2)
        except Exception:  # already gone
            pass
        try:
            self.conn.close()
        except OSError:
            pass

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.proc.join(timeout=2)
        if self.proc.is_alive():
            self.kill()
        else:
            try:
                self.conn.close()
            except OSError:
                pass


_LIVE_GRADERS: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for g in list(_LIVE_GRADERS):
        try:
            g.close()
        except Exception:
            pass


class Grader:
    """Grades responses against gold answers with a hard per-check time bound.

    ``workers > 0``: checks that need math-verify run in that many ``spawn``-ed worker processes; a
    check that overruns ``timeout_s`` gets its worker killed and replaced and counts as wrong with
    reason ``timeout``; the other pairs of its chunk are re-run. Safe to call from any thread.
    ``workers = 0``: everything runs in the calling process; only math-verify's own signal timeouts
    bound a check, and only in the main thread.
    """

    def __init__(self, cfg: GraderConfig | None = None):
        self.cfg = cfg or GraderConfig()
        self.stats = GraderStats()
        self._cache: OrderedDict[tuple[str, str], tuple[bool, str | None]] = OrderedDict()
        self._lock = threading.RLock()
        self._workers: list[_Worker] = []
        self._ctx = mp.get_context("spawn")
        self._closed = False
        _LIVE_GRADERS.add(self)

    # ------------------------------------------------------------------ public API

    def extract(self, response: str) -> str | None:
        ans = extract_answer(_clean_text(response), self.cfg.fallback, max_chars=self.cfg.max_chars)
        if ans is not None:
            ans = ans[: self.cfg.max_answer_chars]
        return ans

    def grade(self, response: str, gold: str, *, extracted: bool = False) -> Verdict:
        return self.grade_batch([response], [gold], extracted=extracted)[0]

    def grade_batch(
        self,
        responses: Sequence[str],
        golds: Sequence[str],
        *,
        extracted: bool = False,
        progress: bool = False,
    ) -> list[Verdict]:
        """Grade pairs in order. ``extracted=True``: responses are already final answers (no extraction)."""
        if len(responses) != len(golds):
            raise ValueError(f"grade_batch: {len(responses)} responses but {len(golds)} gold answers")
        mac = self.cfg.max_answer_chars
        preds: list[str | None] = []
        for r in responses:
            if r is None:
                preds.append(None)
            elif extracted:
                p = _strip_outer(_clean_text(str(r))[:mac])
                preds.append(p or None)
            else:
                preds.append(self.extract(str(r)))
        gold_s = [_gold_answer(_clean_text(str(g))[:mac]) for g in golds]
        results: list[tuple[bool, str | None] | None] = [None] * len(preds)
        todo: dict[tuple[str, str], list[int]] = {}
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(preds), desc="grading", unit="pair", dynamic_ncols=True, file=sys.stderr)
        with self._lock:
            for i, (p, g) in enumerate(zip(preds, gold_s, strict=True)):
                if p is None:
                    results[i] = (False, "no_answer")
                    continue
                key = (p, g)
                hit = self._cache_get(key)
                if hit is not None:
                    self.stats.cache_hits += 1
                    results[i] = hit
                    continue
                if key in todo:
                    todo[key].append(i)
                    continue
                try:
                    q = quick_check(p, g)
                except Exception:
                    q = None
                if q is not None:
                    self.stats.fast_path += 1
                    res = (q, None if q else "mismatch")
                    self._cache_put(key, res)
                    results[i] = res
                    continue
                todo[key] = [i]
            if bar is not None:
                bar.update(len(preds) - sum(len(v) for v in todo.values()))
            if todo:
                keys = list(todo)
                self.stats.slow_path += len(keys)
                weights = [len(todo[k]) for k in keys]
                try:
                    slow = self._run_slow(keys, bar=bar, weights=weights)
                finally:
                    if bar is not None:
                        bar.close()
                for key, res in zip(keys, slow, strict=True):
                    if res[1] != "timeout" or self.cfg.cache_size:
                        self._cache_put(key, res)
                    for i in todo[key]:
                        results[i] = res
            if bar is not None:
                bar.close()
            out = []
            for p, res in zip(preds, results, strict=True):
                assert res is not None
                ok, reason = res
                self.stats.checks += 1
                self.stats.correct += int(ok)
                if reason is not None:
                    self.stats.reasons[reason] = self.stats.reasons.get(reason, 0) + 1
                    if reason == "timeout":
                        self.stats.timeouts += 1
                    elif reason == "parse_error":
                        self.stats.errors += 1
                    elif reason == "no_answer":
                        self.stats.no_answer += 1
                out.append(Verdict(pred=p, correct=ok, reason=reason))
            return out

    def warm_up(self, timeout_s: float = 120.0) -> None:
        """Start the worker processes now and wait until they are ready (no-op with ``workers=0``).

        The time bound of a check starts when a ready worker takes it; waiting for a worker to start
        (the first batch, or just after a timeout replaced one) is not part of it. Call this before
        latency-sensitive grading.
        """
        if self.cfg.workers <= 0:
            return
        with self._lock:
            self._ensure_workers()
            deadline = time.monotonic() + timeout_s
            for i, w in enumerate(self._workers):
                while not w.ready:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise RuntimeError(f"grader workers did not start within {timeout_s:.0f} s")
                    try:
                        if w.conn.poll(min(left, 1.0)):
                            msg = w.conn.recv()
                            w.ready = msg == ("ready",)
                    except (EOFError, OSError):
                        self._replace(w)
                        w = self._workers[i]

    def close(self) -> None:
        """Stop the worker processes (the grader can still be used; it restarts them lazily)."""
        with self._lock:
            workers, self._workers = self._workers, []
        for w in workers:
            w.stop()

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # best effort; atexit covers interpreter shutdown
        try:
            if self._workers:
                self.close()
        except Exception:
            pass

    # ------------------------------------------------------------------ internals

    def _cache_get(self, key):
        if not self.cfg.cache_size:
            return None
        res = self._cache.get(key)
        if res is not None:
            self._cache.move_to_end(key)
        return res

    def _cache_put(self, key, res) -> None:
        if not self.cfg.cache_size:
            return
        self._cache[key] = res
        self._cache.move_to_end(key)
        while len(self._cache) > self.cfg.cache_size:
            self._cache.popitem(last=False)

    def _run_slow(
        self, keys: list[tuple[str, str]], *, bar=None, weights=None
    ) -> list[tuple[bool, str | None]]:
        if self.cfg.workers <= 0:
            out = []
            for j, (p, g) in enumerate(keys):
                out.append(self._check_in_process(p, g))
                if bar is not None:
                    bar.update(weights[j] if weights else 1)
            return out
        return self._run_pool(keys, bar=bar, weights=weights)

    def _check_in_process(self, pred: str, gold: str) -> tuple[bool, str | None]:
        # math-verify's signal timeouts work only in the main thread; elsewhere the check is unbounded
        try:
            return check_pair(pred, gold, self.cfg.max_answer_chars, _main_thread_timeout(self.cfg.timeout_s))
        except Exception:
            return False, "parse_error"

    def _ensure_workers(self) -> None:
        self._workers = [w for w in self._workers if w.proc.is_alive()]
        while len(self._workers) < self.cfg.workers:
            self._workers.append(_Worker(self._ctx, self.cfg.max_answer_chars))

    def _replace(self, w: _Worker) -> None:
        w.kill()
        self.stats.worker_restarts += 1
        idx = self._workers.index(w)
        self._workers[idx] = _Worker(self._ctx, self.cfg.max_answer_chars)

    def _run_pool(
        self, keys: list[tuple[str, str]], *, bar=None, weights=None
    ) -> list[tuple[bool, str | None]]:
        timeout = float(self.cfg.timeout_s)
        n = len(keys)
        results: list[tuple[bool, str | None] | None] = [None] * n
        pending: deque[int] = deque(range(n))
        remaining = n
        self._ensure_workers()
        nw = len(self._workers)
        chunk = max(1, min(32, math.ceil(n / (nw * 8))))
        startup_deadline = time.monotonic() + 120.0
        failed_starts = 0
        while remaining:
            now = time.monotonic()
            # hand out chunks to idle, ready workers
            for w in self._workers:
                if w.ready and not w.busy and pending:
                    items = [pending.popleft() for _ in range(min(chunk, len(pending)))]
                    try:
                        w.conn.send([(i, keys[i][0], keys[i][1]) for i in items])
                    except (OSError, ValueError):
                        pending.extendleft(reversed(items))
                        self._replace(w)
                        continue
                    w.busy.extend(items)
                    w.item_start = time.monotonic()
            if not any(w.ready for w in self._workers) and now > startup_deadline:
                raise RuntimeError("grader workers did not start within 120 s")
            # wait for results or the earliest deadline
            waits = [w.item_start + timeout - now for w in self._workers if w.busy]
            wait_s = max(0.0, min(waits)) + 0.01 if waits else 0.5
            conns = [w.conn for w in self._workers if w.busy or not w.ready]
            ready = _mp_wait(conns, timeout=wait_s) if conns else []
            ready_set = set(ready)
            for w in list(self._workers):
                if w.conn not in ready_set:
                    continue
                try:
                    while w.conn.poll():
                        msg = w.conn.recv()
                        if msg[0] == "ready" and len(msg) == 1:
                            w.ready = True
                            continue
                        i, ok, reason = msg
                        if w.busy and w.busy[0] == i:
                            w.busy.popleft()
                        elif i in w.busy:
                            w.busy.remove(i)
                        if results[i] is None:
                            results[i] = (bool(ok), reason)
                            remaining -= 1
                            if bar is not None:
                                bar.update(weights[i] if weights else 1)
                        w.item_start = time.monotonic()
                except (EOFError, OSError):
                    if not w.ready:
                        failed_starts += 1
                        if failed_starts >= 3:
                            raise RuntimeError(
                                "grader worker processes exit during start-up; "
                                "check that math-verify imports (or use grader.workers=0)"
                            ) from None
                    # the worker died (crash, memory): its current pair is an error, the rest re-run
                    if w.busy:
                        i = w.busy.popleft()
                        if results[i] is None:
                            results[i] = (False, "parse_error")
                            remaining -= 1
                            if bar is not None:
                                bar.update(weights[i] if weights else 1)
                    pending.extendleft(reversed(w.busy))
                    w.busy.clear()
                    self._replace(w)
            # kill workers whose current pair overran
            now = time.monotonic()
            for w in list(self._workers):
                if w.busy and now - w.item_start > timeout:
                    i = w.busy.popleft()
                    if results[i] is None:
                        results[i] = (False, "timeout")
                        remaining -= 1
                        if bar is not None:
                            bar.update(weights[i] if weights else 1)
                    pending.extendleft(reversed(w.busy))
                    w.busy.clear()
                    self._replace(w)
        return [r if r is not None else (False, "parse_error") for r in results]


def _gold_answer(gold: str) -> str:
    """A gold answer written as a solution text (``... so $\\boxed{4}$.``) is its boxed answer."""
    if "\\boxed" in gold or "\\fbox" in gold:
        boxed = extract_answer(gold, ())
        if boxed:
            return boxed
    return gold


def _clean_text(s: str) -> str:
    """Replace lone surrogates (bytes decoded with surrogateescape) so every later step sees valid text."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "replace").decode("utf-8")
