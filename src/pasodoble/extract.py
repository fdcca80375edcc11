"""Final-answer extraction from model text: the last balanced ``\\boxed{...}`` (or ``\\fbox{...}``).

Pure string scanning, linear in the input length, no regex backtracking: safe on untrusted model output
of any size. Used by the Proposer parser (its answer) and by the grader (Solver and benchmark answers).
"""

from __future__ import annotations

import re

# \\boxed or \\fbox not followed by a letter (\\boxedtext would be another macro)
_MARKER_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")


def _matching_braces(text: str) -> dict[int, int]:
    """One linear pass: index of each '{' -> index of its closing '}' (unclosed braces are absent).

    Escaped braces (``\\{``, ``\\}``) do not count.
    """
    match: dict[int, int] = {}
    stack: list[int] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n:
            i += 2
            continue
        if ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            match[stack.pop()] = i
        i += 1
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
                match = _matching_braces(text)
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
