"""Final-answer extraction from model text: the last balanced ``\\boxed{...}`` (or ``\\fbox{...}``).

Pure string scanning, linear in the input length, no regex backtracking: safe on untrusted model output
of any size. Used by the Proposer parser (its answer) and by the grader (Solver and benchmark answers).

``extract_answer`` adds what the grader needs on top of ``last_boxed``: several adjacent boxes at the end
of a response (``\\boxed{2} and \\boxed{3}``) form one answer ``2, 3``, and when there is no box at all,
configurable fallbacks read other conventions: GSM8K's ``#### 72`` (``hashes``), "The answer is 72"
(``answer_is``) and the last number in the text (``last_number``). ``extraction_fallbacks`` gives the
chain of an extraction mode: ``strict`` (rewards, the paper's protocol) or ``flexible`` (base models).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# \\boxed or \\fbox not followed by a letter (\\boxedtext would be another macro)
_MARKER_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# the only characters that matter for brace matching; everything else is skipped in C
_BRACE_TOKEN_RE = re.compile(r"\\.|[{}]", re.DOTALL)

FALLBACKS = ("hashes", "answer_is", "last_number")
# strict: the box, then the configured fallbacks (what rewards and the paper's protocol use);
# flexible: then also the last number of the response (lm-evaluation-harness's "flexible-extract")
EXTRACT_MODES = ("strict", "flexible")


def _matching_braces(text: str, start: int = 0) -> dict[int, int]:
    """One linear pass from ``start``: index of each '{' -> index of its closing '}'.

    Unclosed braces are absent. Escaped braces (``\\{``, ``\\}``) do not count. Braces before ``start``
    cannot change the match of a brace after it, so callers start at the first box marker.
    """
    match: dict[int, int] = {}
    stack: list[int] = []
    for m in _BRACE_TOKEN_RE.finditer(text, start):
        ch = m.group()
        if ch == "{":
            stack.append(m.start())
        elif ch == "}":
            if stack:
                match[stack.pop()] = m.start()
    return match


def boxed_spans(text: str) -> list[tuple[int, int, str]]:
    """All top-level boxed answers in order: (start, end, content). Unbalanced boxes are skipped.

    Handles ``\\boxed{...}`` with nested braces, ``\\boxed 5`` (one token after a space) and ``\\fbox{...}``.
    """
    spans: list[tuple[int, int, str]] = []
    match: dict[int, int] | None = None  # computed on the first braced box only
    n = len(text)
    i = 0  # scan position: boxes inside an accepted box are skipped
    for m in _MARKER_RE.finditer(text):
        pos, j = m.start(), m.end()
        if pos < i:
            continue
        k = j
        while k < n and text[k] in " \t":
            k += 1
        if k < n and text[k] == "{":
            if match is None:
                match = _matching_braces(text, pos)
            close = match.get(k)
            if close is None:
                continue
            spans.append((pos, close + 1, text[k + 1 : close].strip()))
            i = close + 1
        elif k > j and k < n:  # "\\boxed 5": the answer runs to the next whitespace or '$'
            end = k
            while end < n and not text[end].isspace() and text[end] != "$":
                end += 1
            content = text[k:end].rstrip(".,;")
            if content:
                spans.append((pos, end, content))
            i = end
    return spans


def last_boxed(text: str) -> str | None:
    """Content of the last balanced boxed answer in ``text``, or None when there is none."""
    spans = boxed_spans(text)
    return spans[-1][2] if spans else None


# Text allowed between two boxes that together form one answer: punctuation, math delimiters, spacing
# macros and a joining word. Applied only to gaps of at most _MAX_GAP characters (bounded work).
_MAX_GAP = 40
_MAX_GROUP = 10  # at most this many adjacent boxes form one answer (bounded work)
# one token of a joining gap: punctuation/space, math delimiters, spacing macros, \\text{ and }, and/or
_GAP_TOKEN_RE = re.compile(
    r"[\s,;$&]+|\\[\])\[(]|\\(?:quad|qquad|[,;:! ])|\\(?:text|mbox|textrm)\{\s*(?:and|or|,)?\s*\}|(?:and|or)\b"
)


def _is_joining_gap(gap: str) -> bool:
    """Only separators between two boxes (at most _MAX_GAP characters, so bounded work), and at most
    one joining word: ``\\boxed{-2} \\quad \\text{and} \\quad \\boxed{1}``."""
    if len(gap) > _MAX_GAP:
        return False
    pos, words = 0, 0
    while pos < len(gap):
        m = _GAP_TOKEN_RE.match(gap, pos)
        if m is None:
            return False
        if any(w in m.group() for w in ("and", "or")):
            words += 1
        pos = m.end()
    return words <= 1


def trailing_boxed(text: str) -> list[str]:
    """Contents of the last group of boxes that are separated only by commas, 'and', spacing or ``$``.

    ``"so x = \\boxed{2} or x = \\boxed{3}"`` -> ``["3"]`` (the text between is not a separator), but
    ``"\\boxed{2}, \\boxed{3}"`` -> ``["2", "3"]``. Empty list when there is no box. At most
    ``_MAX_GROUP`` (10) boxes, the last ones.
    """
    spans = boxed_spans(text)
    if not spans:
        return []
    group = [spans[-1]]
    for prev in reversed(spans[:-1]):
        if len(group) >= _MAX_GROUP or not _is_joining_gap(text[prev[1] : group[0][0]]):
            break
        group.insert(0, prev)
    return [s[2] for s in group]


def _hashes(text: str) -> str | None:
    pos = text.rfind("####")
    if pos < 0:
        return None
    rest = text[pos + 4 :].lstrip("# \t")
    line = rest.split("\n", 1)[0].strip()
    return line or None


# "answer is", "answer:", "**Answer:**", "**Final Answer**" (a header: the answer is on the next line)
_ANSWER_IS_RE = re.compile(r"answer(?:\s{0,3}(?:is|:)|\*{1,2})", re.IGNORECASE)
_MATH_SEG_RE = re.compile(r"\$\$?([^$]{1,2000})\$\$?|\\\((.{1,2000}?)\\\)|\\\[(.{1,2000}?)\\\]")
# a copula inside the answer sentence: "The largest $n$ is 34" -> the answer follows it
_COPULA_RE = re.compile(r"\s(?:is|are|equals|was|be)\s+(?:equal to\s+)?", re.IGNORECASE)


def _sentence(line: str) -> str:
    """``line`` up to the end of its first sentence (". " outside ``$...$``), without the final period."""
    in_math = False
    for i, ch in enumerate(line):
        if ch == "$":
            in_math = not in_math
        elif ch == "." and not in_math and (i + 1 == len(line) or line[i + 1].isspace()):
            if not (i > 0 and line[i - 1].isdigit() and i + 1 < len(line) and line[i + 1].isdigit()):
                return line[:i]
    return line


def _answer_is(text: str) -> str | None:
    last = None
    for m in _ANSWER_IS_RE.finditer(text):
        last = m
    if last is None:
        return None
    rest = text[last.end() : last.end() + 2000]
    line, _, after = rest.partition("\n")
    line = line.strip().lstrip(":*").strip()
    if not line:
        # a header ("**Final Answer**"): the first non-empty line below it, when it comes right away
        for nxt in after.split("\n", 3)[:3]:
            if nxt.strip():
                line = nxt.strip()
                break
    if not line:
        return None
    line = _sentence(line).strip()
    seg = _MATH_SEG_RE.search(line)
    # "The largest $n$ is 34": a prose subject (the line starts with a word) ends at its first copula
    cop = _COPULA_RE.search(line) if line[:1].isalpha() else None
    if cop is not None and (seg is None or seg.end() <= cop.start()):
        line = line[cop.end() :].strip()
        seg = _MATH_SEG_RE.search(line)
    if seg is not None:
        return (seg.group(1) or seg.group(2) or seg.group(3) or "").strip() or None
    line = line.strip(" .*")
    return line or None


_NUMBER_RE = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?|-?\.\d+")


def _last_number(text: str) -> str | None:
    last = None
    for m in _NUMBER_RE.finditer(text):
        last = m
    return last.group() if last is not None else None


_FALLBACK_FUNCS = {"hashes": _hashes, "answer_is": _answer_is, "last_number": _last_number}


def extraction_fallbacks(mode: str, fallback: Sequence[str]) -> list[str]:
    """The fallback chain of an extraction mode.

    ``strict``: ``fallback`` as it is (by default ``hashes``, ``answer_is``): a response without a box,
    ``####`` or "answer is" has no answer. ``flexible``: the same chain, then ``last_number``, the last
    number anywhere in the response, the convention of lm-evaluation-harness's ``flexible-extract``
    filter for base models whose few-shot answers end like ``A: 18``.
    """
    if mode not in EXTRACT_MODES:
        raise ValueError(f"unknown extraction mode {mode!r}; expected one of {', '.join(EXTRACT_MODES)}")
    chain = list(fallback)
    if mode == "flexible" and "last_number" not in chain:
        chain.append("last_number")
    return chain


def extract_answer(
    text: str, fallback: Sequence[str] = ("hashes", "answer_is"), *, max_chars: int | None = None
) -> str | None:
    """The final answer of a model response, or None when it has none.

    ``text`` is first cut to its last ``max_chars`` characters (when given). The answer is the last
    balanced box, or the last group of adjacent boxes joined with ``", "``; without any box, the
    ``fallback`` rules are tried in order (``hashes``, ``answer_is``, ``last_number``). Linear time.
    """
    if max_chars is not None and len(text) > max_chars:
        text = text[-max_chars:]
    boxes = trailing_boxed(text)
    boxes = [b for b in boxes if b]
    if boxes:
        # the same answer boxed twice in a row is one answer
        uniq: list[str] = []
        for b in boxes:
            if b not in uniq:
                uniq.append(b)
        return ", ".join(uniq)
    for name in fallback:
        func = _FALLBACK_FUNCS.get(name)
        if func is None:
            raise ValueError(f"unknown extraction fallback {name!r}; expected one of {', '.join(FALLBACKS)}")
        ans = func(text)
        if ans:
            return ans
    return None
