"""Benchmark registry: local files, counts, JSONL paths and their errors."""

from __future__ import annotations

import json

import pytest

from pasodoble.errors import UserError
from pasodoble.eval.benchmarks import (
    PAPER_BENCHMARKS,
    REGISTRY,
    dataset_hash,
    find_data_dir,
    load_benchmark,
    parse_benchmark_list,
)

EXPECTED = {
    "math500": 500,
    "gsm8k": 1319,
    "aime24": 30,
    "aime25": 30,
    "amc23": 40,
    "olympiadbench": 675,
    "minerva": 272,
}

DATA_DIR = find_data_dir()
needs_data = pytest.mark.skipif(
    DATA_DIR is None or not (DATA_DIR / "math500.jsonl").exists(), reason="shared/benchmarks not found"
)


@needs_data
@pytest.mark.parametrize("name,count", sorted(EXPECTED.items()))
def test_local_benchmarks_have_expected_counts(name, count):
    bench = load_benchmark(name)
    assert len(bench.problems) == count
    assert len({p.id for p in bench.problems}) == count
    assert all(p.problem and p.answer for p in bench.problems)
    assert bench.source.endswith(REGISTRY[name].filename)


@needs_data
def test_limit_and_hash():
    full = load_benchmark("gsm8k")
    ten = load_benchmark("gsm8k", limit=10)
    assert ten.problems == full.problems[:10]
    assert ten.sha256 == dataset_hash(full.problems[:10]) != full.sha256
    assert ten.problems[0].answer == "18"
    assert load_benchmark("aime24").problems[0].answer.isdigit()


def test_jsonl_path(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text(
        json.dumps({"problem": "1+1?", "answer": 2})
        + "\n\n"
        + json.dumps({"id": "b", "problem": "2+2?", "answer": "4"})
        + "\n"
    )
    bench = load_benchmark(str(path))
    assert bench.name == "mine"
    assert [(p.id, p.answer) for p in bench.problems] == [("mine-0", "2"), ("b", "4")]


def test_jsonl_missing_field_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(
        json.dumps({"problem": "1+1?", "answer": "2"}) + "\n" + json.dumps({"problem": "x"}) + "\n"
    )
    with pytest.raises(UserError, match=r"bad\.jsonl line 2: missing field 'answer'"):
        load_benchmark(str(path))
    path.write_text("{not json\n")
    with pytest.raises(UserError, match=r"line 1 is not valid JSON"):
        load_benchmark(str(path))


def test_unknown_name_and_missing_dir(tmp_path):
    with pytest.raises(UserError, match="unknown benchmark 'nope'"):
        load_benchmark("nope")
    with pytest.raises(UserError, match="does not exist"):
        load_benchmark("math500", data_dir=tmp_path / "absent")


def test_explicit_data_dir(tmp_path):
    (tmp_path / "amc23.jsonl").write_text(json.dumps({"id": "q", "problem": "p", "answer": 27.0}) + "\n")
    bench = load_benchmark("amc23", data_dir=tmp_path)
    assert bench.problems[0].answer == "27"


def test_parse_benchmark_list():
    assert parse_benchmark_list("math500, GSM8K,math500") == ["math500", "gsm8k"]
    assert parse_benchmark_list("paper") == PAPER_BENCHMARKS
    assert parse_benchmark_list("minerva_math") == ["minerva"]
    with pytest.raises(UserError):
        parse_benchmark_list(" , ")
