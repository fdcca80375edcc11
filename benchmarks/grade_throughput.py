"""Grading throughput: our ``Grader`` (the ``pasodoble grade`` code path) vs a plain math-verify loop.

Builds 5,000 (response, gold) pairs from the shared benchmark files: reference solutions with their gold
answers (MATH-500, Minerva, GSM8K, OlympiadBench with the gold boxed at the end) plus perturbed wrong
answers (the final answer changed), then grades them

- with ``Grader(GraderConfig())`` (default config: worker pool, per-check time bound, cache), timing
  includes starting the worker processes;
- with a single-process math-verify loop: last ``\\boxed{}`` (math-verify's own extraction of the whole
  text when there is none), ``parse`` of prediction and gold, ``verify``.

and prints both rates (pairs/s), their ratio, and each grader's agreement with the construction labels.

    .venv/bin/python benchmarks/grade_throughput.py [--n 5000] [--data ../shared/benchmarks]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
import sys
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"


def _perturb(ans: str, rng: random.Random) -> str:
    """A wrong answer of the same shape: change one digit, or add 1 to an expression."""
    digits = [m.start() for m in re.finditer(r"\d", ans)]
    if digits:
        i = rng.choice(digits)
        new = str((int(ans[i]) + rng.randint(1, 8)) % 10)
        out = ans[:i] + new + ans[i + 1 :]
        if out != ans:
            return out
    return ans + "+1"


def _replace_last_box(text: str, new: str) -> str:
    from pasodoble.extract import boxed_spans

    spans = boxed_spans(text)
    s, e, _ = spans[-1]
    return text[:s] + "\\boxed{" + new + "}" + text[e:]


def build_pairs(data: Path, n: int, seed: int = 0) -> list[tuple[str, str, bool]]:
    """(response, gold, is_correct_by_construction) triples, ``n`` of them, deterministic."""
    from pasodoble.extract import last_boxed

    rng = random.Random(seed)

    def load(name):
        with open(data / f"{name}.jsonl", encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]

    correct, wrong = [], []
    for name in ("math500", "minerva_math"):
        for r in load(name):
            sol, gold = r["solution"], r["answer"]
            correct.append((sol, gold, True))
            box = last_boxed(sol)
            if box is not None:
                wrong.append((_replace_last_box(sol, _perturb(box, rng)), gold, False))
    for r in load("gsm8k"):
        sol, gold = r["solution"], r["answer"]
        correct.append((sol, gold, True))
        head, _, tail = sol.rpartition("####")
        wrong.append((head + "#### " + _perturb(tail.strip(), rng), gold, False))
    for r in load("olympiadbench"):
        gold = r["answer"]
        inner = gold.strip().strip("$")
        correct.append((r["solution"] + "\n\nThe final answer is $\\boxed{" + inner + "}$.", gold, True))
        wrong.append(
            (r["solution"] + "\n\nThe final answer is $\\boxed{" + _perturb(inner, rng) + "}$.", gold, False)
        )
    pairs = correct + wrong
    rng.shuffle(pairs)
    while len(pairs) < n:  # only when n exceeds what the files give
        pairs += pairs[: n - len(pairs)]
    return pairs[:n]


def plain_math_verify(pairs) -> list[bool]:
    from math_verify import parse, verify

    from pasodoble.extract import last_boxed

    out = []
    for resp, gold, _ in pairs:
        box = last_boxed(resp)
        pred = parse("\\boxed{" + box + "}") if box is not None else parse(resp)
        out.append(bool(verify(parse("\\boxed{" + gold + "}"), pred)))
    return out


def ours(pairs) -> tuple[list[bool], dict]:
    from pasodoble.config import GraderConfig
    from pasodoble.verify import Grader

    with Grader(GraderConfig()) as g:
        verdicts = g.grade_batch([p[0] for p in pairs], [p[1] for p in pairs])
        stats = g.stats.as_dict()
    return [v.correct for v in verdicts], stats


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = ap.parse_args(argv)
    if not (args.data / "math500.jsonl").exists():
        print(f"benchmark files not found under {args.data}", file=sys.stderr)
        return 1
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    pairs = build_pairs(args.data, args.n)
    labels = [p[2] for p in pairs]

    t0 = time.perf_counter()
    our = ours(pairs)
    t_ours = time.perf_counter() - t0
    ours_v, stats = our

    t0 = time.perf_counter()
    mv = plain_math_verify(pairs)
    t_mv = time.perf_counter() - t0

    def agree(v):
        return sum(a == b for a, b in zip(v, labels, strict=True)) / len(labels)

    r_ours, r_mv = len(pairs) / t_ours, len(pairs) / t_mv
    print(f"pairs: {len(pairs)} ({sum(labels)} correct by construction)")
    print(
        f"ours (Grader, default config): {t_ours:7.2f} s  {r_ours:8.1f} pairs/s  label agreement {agree(ours_v):.4f}"
    )
    print(
        f"plain math-verify loop:        {t_mv:7.2f} s  {r_mv:8.1f} pairs/s  label agreement {agree(mv):.4f}"
    )
    print(f"ratio ours / plain: {r_ours / r_mv:.2f}")
    print(f"grader stats: {stats}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
