"""Write the built-in toy knowledge base ``src/pasodoble/assets/toy_knowledge.jsonl`` (``knowledge.source: toy``).

2,000 worked records of the toy arithmetic world (``pasodoble.toy.corpus``: a canonical problem and its
working), drawn with ``build_corpus(..., mix={"worked": 1.0})`` from a fixed seed and excluding the demo's
held-out and validation problems, so the file can be checked: ``python scripts/make_toy_knowledge.py
--check`` fails when the committed file differs from what this script writes. It grounds the toy
Proposer in ``configs/toy.yaml`` without the demo's 180,000-record corpus.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "pasodoble" / "assets" / "toy_knowledge.jsonl"
RECORDS = 2000
SEED = 11


def render() -> str:
    from pasodoble.toy.build import BuildSettings, evaluation_sets
    from pasodoble.toy.corpus import build_corpus

    _, _, exclude = evaluation_sets(BuildSettings())
    records = build_corpus(RECORDS, SEED, exclude=exclude, mix={"worked": 1.0})
    return "".join(json.dumps({"id": r["id"], "text": r["text"]}) + "\n" for r in records)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail when the committed file differs")
    args = ap.parse_args()
    text = render()
    if args.check:
        if not OUT.is_file() or OUT.read_text() != text:
            print(
                f"{OUT} differs from what scripts/make_toy_knowledge.py writes; regenerate it",
                file=sys.stderr,
            )
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT} ({len(text.splitlines())} records, {len(text)} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
