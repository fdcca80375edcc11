"""`pasodoble knowledge sample` (issue 24, item 7): a local JSONL sample of any knowledge source.

The Hub is unreachable here, so the ``datasets``-name path is exercised with ``datasets``' own
``parquet`` builder over local files (``knowledge.source: parquet`` + ``knowledge.data_files``): the
same ``load_dataset(..., streaming=True)`` call a recipe makes for OctoThinker/MegaMath-Web-Pro-Max.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pasodoble.cli import main
from pasodoble.config import KnowledgeConfig, load_config
from pasodoble.knowledge import KnowledgeBase, read_local, toy_knowledge_path

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "configs" / "recipes").glob("*.yaml"))
MEGAMATH = "OctoThinker/MegaMath-Web-Pro-Max"


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def _sample(capsys, *argv: str) -> tuple[int, dict | None, str]:
    rc = main(["knowledge", "sample", *argv, "--no-progress"])
    out, err = capsys.readouterr()
    return rc, (json.loads(out.strip().splitlines()[-1]) if rc == 0 else None), err


def test_sample_of_the_toy_source(tmp_path, capsys):
    out = tmp_path / "toy.jsonl"
    rc, summary, _ = _sample(capsys, "toy", "--n", "25", "--out", str(out), "--seed", "3")
    assert rc == 0 and summary["written"] == 25 and not summary["exhausted"]
    records = _lines(out)
    assert len(records) == 25 and all(r["source"] == "toy" for r in records)
    by_id = {s.id: s.text for s in read_local(toy_knowledge_path(), "text", prefix="toy")}
    assert all(by_id[r["id"]] == r["text"] for r in records)  # whole texts, their origin named
    assert len({r["id"] for r in records}) == 25
    # the same seed gives the same file; another seed another order
    again = tmp_path / "again.jsonl"
    _sample(capsys, "toy", "--n", "25", "--out", str(again), "--seed", "3")
    assert again.read_bytes() == out.read_bytes()
    other = tmp_path / "other.jsonl"
    _sample(capsys, "toy", "--n", "25", "--out", str(other), "--seed", "4")
    assert [r["id"] for r in _lines(other)] != [r["id"] for r in records]
    # the sample is a knowledge source itself (training, sft build-data --knowledge)
    kb = KnowledgeBase(KnowledgeConfig(source=str(out)), seed=0)
    assert len(kb) == 25 and {s.text for s in kb._snippets} == {r["text"] for r in records}


def test_sample_of_local_files(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.jsonl").write_text(
        "".join(json.dumps({"body": f"jsonl snippet {i}"}) + "\n" for i in range(5)), encoding="utf-8"
    )
    pq.write_table(pa.table({"body": [f"parquet snippet {i}" for i in range(5)]}), corpus / "b.parquet")
    out = tmp_path / "s.jsonl"
    rc, summary, err = _sample(capsys, str(corpus), "--n", "50", "--out", str(out), "--text-field", "body")
    # every snippet once, and a note that the source held fewer than asked
    assert rc == 0 and summary["written"] == 10 and summary["exhausted"]
    assert "holds 10 non-empty snippets" in err
    records = _lines(out)
    assert {r["text"] for r in records} == {f"jsonl snippet {i}" for i in range(5)} | {
        f"parquet snippet {i}" for i in range(5)
    }
    assert {r["id"] for r in records} >= {"a.jsonl:1", "b.parquet:0"}
    # --max-chars cuts long texts; a .txt file is a source too
    txt = tmp_path / "notes.txt"
    txt.write_text("first paragraph, long enough\n\nsecond paragraph\n", encoding="utf-8")
    cut = tmp_path / "cut.jsonl"
    rc, summary, _ = _sample(capsys, str(txt), "--n", "2", "--out", str(cut), "--max-chars", "5")
    assert rc == 0 and sorted(r["text"] for r in _lines(cut)) == ["first", "secon"]


def test_sample_streams_a_datasets_name(tmp_path, capsys):
    # datasets' parquet builder over local files: load_dataset(name, data_files=..., streaming=True)
    shard = tmp_path / "shard-000.parquet"
    pq.write_table(
        pa.table({"text": [f"web page {i} about primes" for i in range(40)], "id": list(range(40))}), shard
    )
    out = tmp_path / "stream.jsonl"
    rc, summary, _ = _sample(
        capsys, "parquet", "--data-files", str(shard), "--n", "12", "--out", str(out), "--shuffle-buffer", "8"
    )
    assert rc == 0 and summary["kind"] == "stream" and summary["written"] == 12
    records = _lines(out)
    assert all(r["source"] == "parquet" and r["id"].startswith("parquet:train#0.") for r in records)
    assert len({r["text"] for r in records}) == 12
    assert {r["text"] for r in records} <= {f"web page {i} about primes" for i in range(40)}
    assert [r["text"] for r in records] != [f"web page {i} about primes" for i in range(12)]  # shuffled


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["toy", "--n", "0"], "--n must be >= 1"),
        (["toy", "--n", "1", "--out", "{tmp}/x.txt"], "must end in .jsonl"),
        (["toy", "--n", "1", "--out", "{tmp}/exists.jsonl"], "exists; pass --overwrite"),
        (["toy", "--n", "1", "--out", "{tmp}/no/dir/x.jsonl"], "does not exist; create it first"),
        (["--n", "1"], "give a SOURCE"),
        (["{tmp}/missing.jsonl", "--n", "1"], "not found"),
    ],
)
def test_errors_are_one_line(tmp_path, capsys, argv, needle):
    (tmp_path / "exists.jsonl").write_text("", encoding="utf-8")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "o.jsonl")]
    rc, _, err = _sample(capsys, *argv)
    assert rc == 1 and needle in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipes_stream_megamath_and_say_so(recipe):
    k = load_config(recipe).knowledge
    assert (k.source, k.text_field, k.split, k.data_files) == (MEGAMATH, "text", "train", [])
    header = recipe.read_text().split("\nmodel:")[0]
    assert "ODC-BY" in header and f"as the dataset {MEGAMATH}" in header
    assert f"pasodoble knowledge sample --config configs/recipes/{recipe.name} --n " in header


def test_a_recipe_knowledge_section_feeds_the_sampler(tmp_path, capsys):
    # a recipe's knowledge section with a local source in place of the Hub (what --config + SOURCE does)
    shard = tmp_path / "part.parquet"
    pq.write_table(pa.table({"text": [f"doc {i}" for i in range(6)]}), shard)
    out = tmp_path / "r.jsonl"
    recipe = str(RECIPES[0])
    rc, summary, _ = _sample(capsys, str(shard), "--config", recipe, "--n", "3", "--out", str(out))
    assert rc == 0 and summary["written"] == 3 and summary["kind"] == "local"
