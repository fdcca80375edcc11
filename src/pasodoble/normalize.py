"""Answer normalization and the fast path of grading (layers 1 and 2 of ``pasodoble.verify``).

Layer 1, ``normalize_answer``: string normalization (``$...$``, ``\\left``/``\\right``, ``\\dfrac``, units,
currency, degrees, percent, thousands separators, leading zeros, ``x =`` prefixes, Python-style numbers,
Unicode math). Layer 2, ``quick_check``: a verdict without sympy when both sides are plain numbers,
multiple-choice letters or lists of numbers (``None`` when it cannot decide). Pure string work, linear
in the (already truncated) answer length: safe on untrusted model output in the calling process.
"""

from __future__ import annotations

import re
import unicodedata
from fractions import Fraction

# --------------------------------------------------------------------------------------------------
# Layer 1: string normalization (all regexes below are linear: no nested or adjacent ambiguous repeats
# over unbounded input, and the grader passes only answers of at most max_answer_chars characters).
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
# the assigned name of a leading "x =", "x_1 =", "a_{12} =", "\\theta =", "f(x) =" (a subscript in braces
# must close before the "=": "\\sum_{k=1}^{3} k" is not an assignment)
_GREEK = (
    "alpha|beta|gamma|delta|epsilon|varepsilon|zeta|eta|theta|vartheta|iota|kappa|lambda|mu|nu|xi|pi|"
    "varpi|rho|varrho|sigma|varsigma|tau|upsilon|phi|varphi|chi|psi|omega|"
    "Gamma|Delta|Theta|Lambda|Xi|Pi|Sigma|Upsilon|Phi|Psi|Omega|ell"
)
# (a name is a letter or a Greek letter: "\\sin(x) =" is a function value, not a name, and stays)
_ASSIGN_RE = re.compile(
    r"^(?:[A-Za-z]|\\(?:" + _GREEK + r")(?![A-Za-z]))(?:_(?:\{[A-Za-z0-9]{1,3}\}|[A-Za-z0-9]{1,3}))?"
    r"(?:\([A-Za-z, ]{1,10}\))?\s*(?:=|\\approx)\s*"
)
_DFRAC_RE = re.compile(r"\\[dt]frac(?![A-Za-z])")
# "\\lim_{x=0}" (an informal "x -> 0"; math-verify reads it as the number 0) -> "\\lim_{x\\to 0}"
_LIM_EQ_RE = re.compile(r"\\lim_\{\s*([A-Za-z]|\\[A-Za-z]{2,10})\s*=")
# "\\int_{x=0}^{1}": the variable is named by the "dx"; math-verify reads "x=0" as the number 0
_INT_EQ_RE = re.compile(r"\\int_\{\s*[A-Za-z]\s*=\s*")
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
# "√3", "√x", "√(3)", "√(x+1)" (one level of parentheses; a bare "√" becomes "\\sqrt")
_UNICODE_SQRT_RE = re.compile(r"\u221a\s*(?:\(([^()]{1,200})\)|(\d+|[A-Za-z]))?")
# zero-width space, non-joiner, joiner, word joiner, byte-order mark: invisible, dropped
_ZERO_WIDTH_RE = re.compile("[\u200b\u200c\u200d\u2060\ufeff]")
# a run of superscript (<super>) or subscript (<sub>) characters, per Unicode's decomposition data
_SUPER_CHARS = "".join(
    c
    for c in map(chr, range(0xA0, 0x2100))
    if unicodedata.decomposition(c).startswith("<super>") and c not in "\u00aa\u00ba"  # ordinals ª º
)
_SUB_CHARS = "".join(
    c for c in map(chr, range(0xA0, 0x2100)) if unicodedata.decomposition(c).startswith("<sub>")
)
_SUPER_RE = re.compile("[" + re.escape(_SUPER_CHARS) + "]+")
_SUB_RE = re.compile("[" + re.escape(_SUB_CHARS) + "]+")
# vulgar fractions (U+00BC-U+00BE, U+2150-U+215F): "½" -> "\\frac{1}{2}"
_VULGAR_CHARS = "".join(
    c for c in map(chr, range(0xA0, 0x2190)) if unicodedata.decomposition(c).startswith("<fraction>")
)
_VULGAR_RE = re.compile("[" + re.escape(_VULGAR_CHARS) + "]")


def _decomposed(ch: str) -> str:
    """The plain characters a compatibility character stands for ("²" -> "2", "½" -> "1⁄2")."""
    return "".join(chr(int(h, 16)) for h in unicodedata.decomposition(ch).split()[1:])


def _vulgar_fraction(ch: str) -> str:
    num, _, den = _decomposed(ch).partition("\u2044")
    return f"\\frac{{{num}}}{{{den}}}" if num and den else ch


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
    """Unicode math a model writes, as LaTeX: ``3²`` -> ``3^{2}``, ``x₁`` -> ``x_{1}``, ``½`` -> ``\\frac{1}{2}``,
    ``√(3)`` -> ``\\sqrt{3}``, ``π`` -> ``\\pi``; zero-width characters are dropped. Linear."""
    if s.isascii():
        return s
    s = _ZERO_WIDTH_RE.sub("", s)
    s = _SUPER_RE.sub(lambda m: "^{" + "".join(map(_decomposed, m.group())) + "}", s)
    s = _SUB_RE.sub(lambda m: "_{" + "".join(map(_decomposed, m.group())) + "}", s)
    s = _VULGAR_RE.sub(lambda m: _vulgar_fraction(m.group()), s)
    s = _UNICODE_SQRT_RE.sub(
        lambda m: "\\sqrt{" + (m.group(1) or m.group(2)) + "}" if (m.group(1) or m.group(2)) else "\\sqrt", s
    )
    return _UNICODE_RE.sub(lambda m: _UNICODE_MAP[m.group()], s)


def strip_outer(s: str) -> str:
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
    s = strip_outer(_unicode_to_latex(s))
    s = s.replace("\n", " ").replace("\\\\!", "")
    s = _COMMA_SPACING_RE.sub(r"\1,", s)
    s = _DFRAC_RE.sub(r"\\frac", s)
    s = _LIM_EQ_RE.sub(r"\\lim_{\1\\to ", s)
    s = _INT_EQ_RE.sub(r"\\int_{", s)
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
    s = _TRAILING_BACKSLASH_RE.sub("", s.strip())  # "185\\": a stray backslash at the end ends no macro
    s = s.strip().rstrip(".").strip()
    s = strip_outer(s)
    s = _strip_assignment(s)
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


def _strip_assignment(s: str) -> str:
    """``x = 3`` -> ``3``: a leading assignment is dropped when no other top-level ``=`` follows it.

    Top level means outside braces: ``x = \\sum_{k=1}^{4} k`` -> ``\\sum_{k=1}^{4} k``, but ``x = 2 = y`` and
    ``\\sum_{k=1}^{3} k`` (whose ``=`` is inside the subscript) are kept whole. Linear.
    """
    m = _ASSIGN_RE.match(s)
    if not m or m.end() == len(s):
        return s
    depth = 0
    for ch in s[m.end() :]:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "=" and depth <= 0:
            return s
    return s[m.end() :]


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


_TRAILING_BACKSLASH_RE = re.compile(r"(?<=[\w.)\]}])\s*\\$")

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
    """math-verify's numeric rule, minus its false positives on tiny and on large numbers.

    Two exact numbers (integers, fractions) must be equal. When either was written as a decimal, they
    are equal if they agree to 6 decimal places (``0.333333`` = ``1/3``, as in math-verify) for numbers of
    magnitude >= 0.01, or, below that, to a relative 1e-9 (so ``1e-7`` != ``2e-7``, which 6-decimal
    rounding merges). No relative tolerance applies from 0.01 up: ``4000000000.0`` != ``4000000003``.
    """
    if a == b:
        return True
    if exact:
        return False
    scale = max(abs(a), abs(b))
    if scale < Fraction(1, 100):
        return abs(a - b) <= Fraction(1, 10**9) * scale
    return round(a, 6) == round(b, 6)


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


# an option letter standing alone: "C", "(C)", "(c)" (not inside a word or a macro name: "ABC", "\\Delta")
_MC_ANY_RE = re.compile(r"(?<![A-Za-z\\])([A-E])(?![A-Za-z])|\(\s*([a-e])\s*\)")


def _mc_letter(raw: str) -> str | None:
    """Multiple-choice letter of an answer such as ``C``, ``(C)``, ``\\text{(C)}``, ``(C) 12``, ``Option C``.

    An answer naming two different option letters anywhere (``(D) and (E)``, ``A, C``, ``C D E``,
    ``(C)(D)``, ``C (or maybe D)``, ``\\textbf{(C)} and \\textbf{(D)}``) gives ``"?"``, which matches no
    gold letter: a hedge is not an answer.
    """
    s = _MC_PREFIX_RE.sub("", strip_outer(raw).strip())
    s = _TEXT_MACRO_RE.sub(lambda mm: mm.group(1), s).strip()  # \\textbf{(C)} -> (C), linear
    letters = {(m.group(1) or m.group(2)).upper() for m in _MC_ANY_RE.finditer(s)}
    if len(letters) > 1:
        return _MC_AMBIGUOUS
    m = _MC_RE.match(s + " ")
    if not m:
        return None
    rest = s[m.end() - 1 :] if m.group(0)[-1:] in ".:)" else s[m.end() :]
    if _MC_SECOND_RE.match(rest.lstrip(".:)") + " "):
        return _MC_AMBIGUOUS
    return m.group(1).upper()


_GOLD_MC_RE = re.compile(r"^\(?[A-E]\)?$")


def _gold_is_letter(gold_raw: str) -> str | None:
    s = strip_outer(gold_raw)
    m = _TEXT_MACRO_RE.fullmatch(s)
    if m:
        s = m.group(1)
    s = "".join(s.split())
    if s.startswith("\\textbf{") and s.endswith("}"):
        s = s[8:-1]
    return s.strip("()")[:1] if _GOLD_MC_RE.fullmatch(s) else None


def _equation_sides(s: str) -> list[str]:
    """The sides of ``s`` split at its top-level ``=`` (outside braces and brackets): ``["6", "5"]`` for
    ``6 = 5``, ``[s]`` when it has none. Linear."""
    if "=" not in s:
        return [s]
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(s):
        if ch in "{([":
            depth += 1
        elif ch in "})]":
            depth -= 1
        elif ch == "=" and depth == 0 and s[i - 1 : i] not in ("<", ">", "!", "\\"):
            parts.append(s[start:i].strip())
            start = i + 1
    parts.append(s[start:].strip())
    return parts if all(parts) else [s]


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
    sides = _equation_sides(p)
    if len(sides) >= 2 and len(_equation_sides(g)) < 2:
        # "6 = 5", "2 + 3 = 5" against "5": an equation that is not an assignment is right only when every
        # side equals the gold; with plain numbers that is decided here, a false one matches nothing
        nums = [as_number(x) for x in sides]
        if all(x is not None for x in nums):
            if any(x != nums[0] for x in nums[1:]):
                return False
            p = sides[-1]
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
    pparts = _split_top_level(p) if "," in p else []
    if (gn is not None and len(pparts) >= 2) or (pn is not None and len(gparts) >= 2):
        # a list of several values against one number ("2, 2" or "2, 3" vs "2"): lengths differ; one value
        # written in several forms ("15\\frac{39}{40}, \\frac{639}{40}") is that value
        one, parts = (gn, pparts) if gn is not None else (pn, gparts)
        forms = [_compact(x) for x in parts]
        return len(set(forms)) == len(forms) and all(as_number(x) == one for x in parts)
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
