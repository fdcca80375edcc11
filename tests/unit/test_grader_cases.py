"""Labelled regression set for the grader: ``tests/data/grader_cases.jsonl``.

Each line is ``{"pred" | "response", "gold", "correct", "note"}``: an already-extracted answer or a full
model response, the gold answer, the hand-checked verdict and what the case is about. The cases are our
own, modelled on the kinds of pairs that public graders' test fixtures check (math-verify, Qwen2.5-Math's
``math_equal``, Minerva's ``is_equiv``, PRM800K) and on judged model outputs; conventions are in
``docs/grading.md``. All pairs go through one ``Grader`` batch (2 workers). Plain math-verify (last box,
``parse`` + ``verify``) is scored on the same set for the record, not asserted.

Run ``python tests/unit/test_grader_cases.py`` to print both agreement figures and every disagreement.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pasodoble.config import GraderConfig
from pasodoble.extract import last_boxed
from pasodoble.verify import Grader

CASES_PATH = Path(__file__).resolve().parents[1] / "data" / "grader_cases.jsonl"
MIN_AGREEMENT = 0.995


def load_cases() -> list[dict]:
    cases = []
    with CASES_PATH.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            c = json.loads(line)
            assert ("pred" in c) != ("response" in c), f"line {n}: exactly one of pred/response"
            assert isinstance(c["correct"], bool) and "gold" in c and c.get("note"), f"line {n}"
            cases.append(c)
    return cases


def grade_ours(cases: list[dict]) -> list[bool]:
    """One batch through Grader (2 workers); responses are extracted, preds are taken as they are."""
    with Grader(GraderConfig(workers=2, timeout_s=5)) as g:
        # responses are extracted with the Grader's own rules; then all pairs go in one batch
        preds = [c["pred"] if "pred" in c else g.extract(c["response"]) for c in cases]
        verdicts = g.grade_batch(preds, [c["gold"] for c in cases], extracted=True)
    return [v.correct for v in verdicts]


def grade_plain_math_verify(cases: list[dict]) -> list[bool]:
    """Plain math-verify: last box of a response (else the whole text), ``parse`` + ``verify``."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    logging.getLogger("latex2sympy2_extended").setLevel(logging.CRITICAL)
    cfg = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    out = []
    for c in cases:
        if "pred" in c:
            pred_text = "\\boxed{" + c["pred"] + "}" if c["pred"] else ""
        else:
            box = last_boxed(c["response"])
            pred_text = "\\boxed{" + box + "}" if box is not None else c["response"]
        gold_box = last_boxed(c["gold"])
        gold_text = "\\boxed{" + (gold_box if gold_box is not None else c["gold"]) + "}"
        try:
            ok = bool(verify(parse(gold_text, cfg), parse(pred_text, cfg), timeout_seconds=5))
        except Exception:
            ok = False
        out.append(ok)
    return out


def _short(s: str, n: int = 120) -> str:
    return repr(s) if len(s) <= n else f"{s[:n]!r}... ({len(s)} characters)"


def _report(name: str, cases: list[dict], got: list[bool]) -> tuple[float, list[str]]:
    bad = []
    for c, v in zip(cases, got, strict=True):
        if v != c["correct"]:
            what = f"pred={_short(c['pred'])}" if "pred" in c else f"response={c['response'][-80:]!r}"
            bad.append(
                f"  [{name}] expected {c['correct']}, got {v}: {what} gold={_short(c['gold'])} ({c['note']})"
            )
    agree = 1 - len(bad) / len(cases)
    print(f"{name}: {len(cases) - len(bad)}/{len(cases)} agree ({100 * agree:.2f}%)")
    for line in bad:
        print(line)
    return agree, bad


def test_case_set_is_balanced():
    cases = load_cases()
    assert len(cases) >= 400
    neg = sum(not c["correct"] for c in cases)
    assert neg >= 0.4 * len(cases), f"only {neg} negative cases"


def test_grader_agrees_with_labels():
    cases = load_cases()
    agree, bad = _report("ours", cases, grade_ours(cases))
    _report("plain math-verify", cases, grade_plain_math_verify(cases))
    assert agree >= MIN_AGREEMENT, "\n".join(bad)


if __name__ == "__main__":
    cs = load_cases()
    _report("ours", cs, grade_ours(cs))
    _report("plain math-verify", cs, grade_plain_math_verify(cs))
