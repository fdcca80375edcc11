"""`pasodoble grade`: grade model responses (or extracted answers) in a JSONL file against gold answers.

Each input line is a JSON object with ``gold`` (or ``answer``) and either ``response`` (a full model
output, from which the final answer is extracted) or ``pred`` (an answer already extracted). Each output
line, in input order, has the input's ``id`` (when present), ``pred``, ``correct`` and, when not correct,
``reason`` (no_answer, mismatch, timeout, parse_error). Malformed lines are reported with their line
number and skipped; the command then exits 1 after writing all the others.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from pasodoble.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="IN.jsonl", help="JSONL with gold|answer and response|pred per line")
    parser.add_argument(
        "--out", required=True, metavar="OUT.jsonl", help="where to write one verdict per line"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="S",
        help="wall-clock bound on one check in seconds (default: grader.timeout_s)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="worker processes; 0 grades in-process without a hard bound (default: grader.workers)",
    )
    parser.add_argument(
        "--fallback",
        nargs="*",
        default=None,
        metavar="RULE",
        choices=("hashes", "answer_is", "last_number"),
        help="extraction fallbacks when there is no \\boxed{}: hashes, answer_is, last_number "
        "(default: grader.fallback; give none to disable)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def _read(path: Path) -> tuple[list[dict], list[str]]:
    """Valid records (with their 1-based line numbers) and one message per malformed line."""
    records, errors = [], []
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"input file not found: {path}") from None
    except IsADirectoryError:
        raise UserError(f"input is a directory, not a JSONL file: {path}") from None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    text = raw.decode("utf-8", errors="replace")
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append(f"line {lineno}: not valid JSON ({exc.msg})")
            continue
        if not isinstance(obj, dict):
            errors.append(f"line {lineno}: expected a JSON object")
            continue
        gold = obj.get("gold", obj.get("answer"))
        if gold is None or isinstance(gold, (dict, list, bool)):
            errors.append(f"line {lineno}: needs a 'gold' (or 'answer') string or number")
            continue
        if "response" in obj:
            kind, value = "response", obj["response"]
        elif "pred" in obj:
            kind, value = "pred", obj["pred"]
        else:
            errors.append(f"line {lineno}: needs a 'response' or a 'pred' field")
            continue
        if value is not None and not isinstance(value, (str, int, float)) or isinstance(value, bool):
            errors.append(f"line {lineno}: '{kind}' must be a string")
            continue
        records.append(
            {
                "line": lineno,
                "id": obj.get("id"),
                "has_id": "id" in obj,
                "kind": kind,
                "value": None if value is None else str(value),
                "gold": str(gold),
            }
        )
    return records, errors


def _write_atomic(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for line in lines:
                fh.write(line + "\n")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def run(args: argparse.Namespace) -> int:
    from pasodoble.config import GraderConfig
    from pasodoble.verify import Grader

    cfg = GraderConfig()
    if args.timeout is not None:
        if not args.timeout > 0:
            raise UserError(f"--timeout must be > 0; got {args.timeout}")
        cfg.timeout_s = args.timeout
    if args.workers is not None:
        if args.workers < 0:
            raise UserError(f"--workers must be >= 0; got {args.workers}")
        cfg.workers = args.workers
    if args.fallback is not None:
        cfg.fallback = list(args.fallback)

    in_path, out_path = Path(args.input), Path(args.out)
    records, errors = _read(in_path)
    for msg in errors:
        print(f"pasodoble grade: {in_path}: {msg}", file=sys.stderr)

    verdicts = [None] * len(records)
    with Grader(cfg) as grader:
        for kind in ("response", "pred"):
            idx = [i for i, r in enumerate(records) if r["kind"] == kind]
            if not idx:
                continue
            got = grader.grade_batch(
                [records[i]["value"] for i in idx],
                [records[i]["gold"] for i in idx],
                extracted=(kind == "pred"),
                progress=not args.no_progress,
            )
            for i, v in zip(idx, got, strict=True):
                verdicts[i] = v
        stats = grader.stats

    lines = []
    for rec, v in zip(records, verdicts, strict=True):
        row: dict = {}
        if rec["has_id"]:
            row["id"] = rec["id"]
        row["pred"] = v.pred
        row["correct"] = v.correct
        if not v.correct:
            row["reason"] = v.reason
        lines.append(json.dumps(row))
    _write_atomic(out_path, lines)

    n = len(records)
    k = sum(1 for v in verdicts if v.correct)
    pct = 100.0 * k / n if n else 0.0
    print(f"accuracy: {k}/{n} ({pct:.2f}%)")
    if stats.timeouts or stats.errors:
        print(f"timeouts: {stats.timeouts}, parse errors: {stats.errors}", file=sys.stderr)
    if errors:
        print(f"pasodoble grade: {len(errors)} malformed line(s) skipped", file=sys.stderr)
        return 1
    return 0
