"""A knowledge base from your own files: the Proposer's snippets come from a local JSONL (or text) file.

    python examples/custom_knowledge.py

Writes a small corpus of worked arithmetic in the style of the toy world (a JSONL file whose text is in
a field named "body"), points knowledge.source at it and trains the shipped toy models for 2 online steps
on the CPU (about 15-30 s on 2 cores), then shows which snippet each proposed problem came from.

Any corpus works the same way: knowledge.source takes a .jsonl, .parquet or .txt file (a .txt holds one
snippet per blank-line-separated paragraph), a directory of them, or a `datasets` name (streamed);
knowledge.text_field names the JSONL/parquet field; knowledge.max_snippet_tokens caps each snippet.
The toy models learned on toy-world text, so a real corpus wants real models (docs/quickstart.md).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pasodoble as pd

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "toy.yaml"
TOY_MODELS = Path(pd.__file__).resolve().parent / "assets" / "toy"


def worked(a: int, op: str, b: int, c: int) -> str:
    """A worked two-step problem, written as the toy world's corpus writes them."""
    first = {"+": a + b, "-": a - b, "*": a * b}[op]
    total = first + c
    return (
        f"What is {a} {op} {b} + {c}?\n{a} {op} {b} + {c}\n{a} {op} {b} = {first}, leaving {first} + {c}\n"
        f"{first} + {c} = {total}\nThe answer is {total}."
    )


def write_corpus(path: Path) -> None:
    rows = [
        (12, "*", 3, 5),
        (40, "-", 17, 8),
        (7, "+", 26, 9),
        (9, "*", 9, 11),
        (63, "-", 5, 2),
        (15, "+", 4, 30),
    ]
    with path.open("w", encoding="utf-8") as fh:
        for i, (a, op, b, c) in enumerate(rows):
            fh.write(json.dumps({"id": f"note-{i}", "body": worked(a, op, b, c)}) + "\n")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "my_notes.jsonl"
        write_corpus(corpus)
        cfg = pd.load_config(
            CONFIG,
            overrides=[
                f"knowledge.source={corpus}",
                "knowledge.text_field=body",
                f"model.name_or_path={TOY_MODELS / 'solver_cold_start'}",
                f"proposer.model_path={TOY_MODELS / 'proposer_cold_start'}",
                f"solver.model_path={TOY_MODELS / 'solver_cold_start'}",
                f"run.out_dir={Path(tmp) / 'run'}",
                "run.max_steps=2",
                "run.device=cpu",
                "run.progress=false",
            ],
        )
        result = pd.train(cfg)
        print(result)
        assert result.steps == 2 and result.updates > 0

        rollouts = [json.loads(line) for line in (result.run_dir / "rollouts.jsonl").read_text().splitlines()]
        for r in rollouts[:6]:
            print(
                f"{r['snippet_id']:>18}  {'valid  ' if r['valid'] else 'invalid'}  {r['problem']!r} -> {r['answer']!r}"
            )
        assert all(r["snippet_id"].startswith("my_notes.jsonl:") for r in rollouts), (
            "snippets from the corpus"
        )


if __name__ == "__main__":
    main()
