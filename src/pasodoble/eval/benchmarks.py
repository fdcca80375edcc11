"""Benchmark registry: name -> problems with gold answers, from local JSONL first, else Hugging Face.

A benchmark is a list of ``Problem(id, problem, answer)``. ``load_benchmark`` resolves, in order:

1. a path to a JSONL file (any file whose lines hold ``problem`` and ``answer``; ``id`` optional);
2. a registry name whose file exists in the data directory (``--data-dir``, else the first
   ``shared/benchmarks`` found searching upward from the working directory and from this package);
3. a registry name loaded with ``datasets.load_dataset`` and the entry's field mapping (needs a network).

The dataset hash (sha256 of the ids, problems and answers actually used) goes into every results
manifest, so two results are comparable only when they were computed on the same problems.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pasodoble.errors import UserError
from pasodoble.jsonl import read_jsonl


@dataclass(frozen=True)
class Problem:
    """One benchmark problem: a stable id, the statement and the gold final answer (unnormalized)."""

    id: str
    problem: str
    answer: str


@dataclass
class Benchmark:
    """The problems of one benchmark as evaluated (after ``limit``) and where they came from."""

    name: str
    problems: list[Problem]
    source: str
    display: str

    @property
    def sha256(self) -> str:
        return dataset_hash(self.problems)


def _gsm8k_answer(record: dict[str, Any]) -> str:
    return str(record["answer"]).split("####")[-1].strip()


def _first(values: Any) -> str:
    return str(values[0]) if isinstance(values, (list, tuple)) else str(values)


@dataclass(frozen=True)
class BenchmarkSpec:
    """Where a benchmark lives: its local file name and its Hugging Face dataset with field mapping."""

    name: str
    display: str  # column title in results tables (the paper's Table 1 spelling)
    filename: str  # file in the local data directory
    hf_path: str
    hf_split: str
    hf_config: str | None = None
    problem_field: str = "problem"
    answer_field: str = "answer"
    id_field: str | None = None
    # answer from the whole record, when it is not a plain field (GSM8K's "#### 72", OlympiadBench's list)
    answer_fn: Callable[[dict[str, Any]], str] | None = field(default=None, compare=False)


REGISTRY: dict[str, BenchmarkSpec] = {
    s.name: s
    for s in [
        BenchmarkSpec("aime24", "AIME24", "aime24.jsonl", "HuggingFaceH4/aime_2024", "train", id_field="id"),
        BenchmarkSpec(
            "aime25", "AIME25", "aime25.jsonl", "MathArena/aime_2025", "train", id_field="problem_idx"
        ),
        BenchmarkSpec("amc23", "AMC23", "amc23.jsonl", "math-ai/amc23", "test", problem_field="question"),
        BenchmarkSpec(
            "gsm8k",
            "GSM8K",
            "gsm8k.jsonl",
            "openai/gsm8k",
            "test",
            hf_config="main",
            problem_field="question",
            answer_fn=_gsm8k_answer,
        ),
        BenchmarkSpec(
            "math500", "MATH-500", "math500.jsonl", "HuggingFaceH4/MATH-500", "test", id_field="unique_id"
        ),
        BenchmarkSpec(
            "olympiadbench",
            "OlympiadBench",
            "olympiadbench.jsonl",
            "Hothan/OlympiadBench",
            "train",
            hf_config="OE_TO_maths_en_COMP",
            problem_field="question",
            id_field="id",
            answer_fn=lambda r: _first(r["final_answer"]),
        ),
        BenchmarkSpec(
            "minerva",
            "Minerva",
            "minerva_math.jsonl",
            "math-ai/minervamath",
            "test",
            problem_field="question",
        ),
    ]
}
ALIASES = {
    "minerva_math": "minerva",
    "math-500": "math500",
    "math_500": "math500",
    "olympiad": "olympiadbench",
}
# The paper's Table 1 benchmarks, in its column order; the default of `pasodoble eval --benchmarks`.
PAPER_BENCHMARKS = ["aime24", "aime25", "amc23", "gsm8k", "math500", "olympiadbench"]


def dataset_hash(problems: list[Problem]) -> str:
    """sha256 of the (id, problem, answer) triples in order: identifies exactly what was evaluated."""
    h = hashlib.sha256()
    for p in problems:
        h.update(json.dumps([p.id, p.problem, p.answer], ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def find_data_dir(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The local benchmark folder: ``explicit`` if given (must exist), else the first ``shared/benchmarks``
    found in the working directory, the package directory, or any of their ancestors; None if none."""
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_dir():
            raise UserError(f"benchmark data directory {path} does not exist")
        return path
    env = os.environ.get("PASODOBLE_BENCHMARKS")
    if env and Path(env).is_dir():
        return Path(env)
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for base in (start, *start.parents):
            candidate = base / "shared" / "benchmarks"
            if candidate.is_dir():
                return candidate
    return None


def _as_answer(value: Any) -> str:
    """Gold answers are strings; integral floats (AMC23's 27.0) are written as integers."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _qa_record(record: dict, path: Path, lineno: int) -> dict:
    """A question-answering line (``task: qa``): ``question``, ``answers`` (a list: any counts) or
    ``answer``, optional ``context`` (put before the question) -> ``problem``/``answer`` (a JSON list of
    the answers when there are several, what ``tasks.qa.QAGrader`` reads)."""
    answers = record.get("answers", record.get("answer"))
    if isinstance(answers, list):
        if not answers or not all(isinstance(a, str) for a in answers):
            raise UserError(f"{path} line {lineno}: 'answers' must be a non-empty list of strings")
        answer = answers[0] if len(answers) == 1 else json.dumps(answers, ensure_ascii=False)
    else:
        answer = answers
    question = str(record["question"])
    if record.get("context"):
        question = f"{record['context']}\n\nQuestion: {question}"
    return {"id": record.get("id"), "problem": question, "answer": answer}


def read_problems_jsonl(path: str | os.PathLike[str]) -> list[Problem]:
    """Problems from a JSONL file with ``problem`` and ``answer`` per line (``id`` optional), or the
    question-answering format ``question`` + ``answers`` (a list) or ``answer``, optional ``context``.

    A line that is not a JSON object or lacks a field raises UserError naming the file and line.
    """
    path = Path(path)
    problems: list[Problem] = []
    seen: set[str] = set()
    for lineno, record in read_jsonl(path, "benchmark file"):
        if record.get("problem") is None and record.get("question") is not None:
            record = _qa_record(record, path, lineno)
        for key in ("problem", "answer"):
            if record.get(key) is None:
                raise UserError(f"{path} line {lineno}: missing field '{key}'")
        pid = str(record["id"]) if record.get("id") is not None else f"{path.stem}-{lineno - 1}"
        if pid in seen:
            raise UserError(f"{path} line {lineno}: duplicate id '{pid}'")
        seen.add(pid)
        problems.append(Problem(pid, str(record["problem"]), _as_answer(record["answer"])))
    if not problems:
        raise UserError(f"benchmark file {path} holds no problems")
    return problems


def _load_hf(spec: BenchmarkSpec) -> list[Problem]:
    """The real ``datasets.load_dataset`` path, for users with a network and no local copy."""
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a core dependency
        raise UserError(
            "the 'datasets' package is needed to download benchmarks; pip install datasets"
        ) from None
    try:
        ds = datasets.load_dataset(spec.hf_path, spec.hf_config, split=spec.hf_split)
    except Exception as exc:
        raise UserError(
            f"benchmark '{spec.name}' has no local file {spec.filename} (set --data-dir) and loading "
            f"{spec.hf_path} from Hugging Face failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        ) from None
    problems = []
    for i, record in enumerate(ds):
        answer = spec.answer_fn(record) if spec.answer_fn else _as_answer(record[spec.answer_field])
        pid = str(record[spec.id_field]) if spec.id_field and record.get(spec.id_field) is not None else None
        problems.append(Problem(pid or f"{spec.name}-{i}", str(record[spec.problem_field]), answer))
    return problems


def resolve_name(name: str) -> str:
    return ALIASES.get(name.lower(), name.lower())


def is_path(name: str) -> bool:
    return name.endswith((".jsonl", ".json")) or os.sep in name or Path(name).is_file()


def load_benchmark(
    name: str, *, data_dir: str | os.PathLike[str] | None = None, limit: int | None = None
) -> Benchmark:
    """Load one benchmark by registry name or JSONL path; keep the first ``limit`` problems if given."""
    if is_path(name) and resolve_name(name) not in REGISTRY:
        path = Path(name)
        bench = Benchmark(path.stem, read_problems_jsonl(path), str(path.resolve()), path.stem)
    else:
        key = resolve_name(name)
        spec = REGISTRY.get(key)
        if spec is None:
            raise UserError(
                f"unknown benchmark '{name}'; known: {', '.join(REGISTRY)} (or a path to a JSONL file "
                "with 'problem' and 'answer' fields)"
            )
        root = find_data_dir(data_dir)
        local = root / spec.filename if root is not None else None
        if local is not None and local.is_file():
            bench = Benchmark(key, read_problems_jsonl(local), str(local.resolve()), spec.display)
        else:
            bench = Benchmark(
                key, _load_hf(spec), f"hf:{spec.hf_path}:{spec.hf_config or ''}:{spec.hf_split}", spec.display
            )
    if limit is not None:
        bench.problems = bench.problems[:limit]
    return bench


def parse_benchmark_list(text: str | list[str]) -> list[str]:
    """'math500,gsm8k' or ['math500', 'gsm8k'] -> names (deduplicated, order kept); 'paper' = the six."""
    items = text.split(",") if isinstance(text, str) else [x for part in text for x in part.split(",")]
    names: list[str] = []
    for item in items:
        item = item.strip()
        expanded = PAPER_BENCHMARKS if item.lower() in ("paper", "all") else [item] if item else []
        for n in expanded:
            n = n if is_path(n) else resolve_name(n)
            if n not in names:
                names.append(n)
    if not names:
        raise UserError("no benchmarks given")
    return names


def display_name(name: str) -> str:
    spec = REGISTRY.get(name)
    return spec.display if spec else name
