"""`pasodoble grade`: grade model responses (or extracted answers) in a JSONL file against gold answers.

Each input line is a JSON object with ``gold`` (or ``answer``) and either ``response`` (a full model
output, from which the final answer is extracted) or ``pred`` (an answer already extracted). Each output
line, in input order, has the input's 1-based ``line`` number, its ``id`` (when present), ``pred``,
``correct`` and, when not correct, ``reason`` (no_answer, mismatch, timeout, parse_error, too_long).
Malformed lines are reported with their line number and skipped; the command then exits 1 after writing
all the others. ``--extract flexible`` also takes the last number of a response that has no box,
``####`` or "answer is" (for base models' few-shot answers such as ``A: 18``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from pasodoble.errors import UserError
from pasodoble.extract import EXTRACT_MODES
from pasodoble.rundir import check_writable


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
    parser.add_argument(
        "--extract",
        default="strict",
        choices=EXTRACT_MODES,
        help="strict: the last \\boxed{}, else the fallbacks (what rewards use; the paper's protocol); "
        "flexible: then also the last number in the response (lm-evaluation-harness's flexible-extract, "
        "for base models' 'A: 18' answers) (default %(default)s)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def _read(path: Path) -> tuple[list[dict], list[str], str]:
    """Valid records (with their 1-based line numbers), one message per malformed line, and what was
    read (bytes and lines, for the warning about an input with nothing to grade)."""
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
    # JSONL lines end with "\n" only (a "\r" before it is dropped): U+2028, U+0085 or a bare "\r" inside
    # a string, which str.splitlines() would also split at, are part of their line
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    blank = sum(1 for line in lines if not line.strip())
    read = f"read {len(raw)} bytes, {len(lines)} line(s), {blank} blank"
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line, strict=False)  # raw control characters inside strings are kept
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
    return records, errors, read


def _check_not_input(in_path: Path, out_path: Path) -> None:
    """Refuse an ``--out`` that is the input itself (same path, a symlink to it, or a hard link)."""
    same = in_path.resolve() == out_path.resolve()
    if not same and in_path.exists() and out_path.exists():
        try:
            same = os.path.samefile(in_path, out_path)
        except OSError:
            same = False
    if same:
        raise UserError(f"--out {out_path} is the input file {in_path}; write the verdicts to another file")


def _new_file_mode(path: Path) -> int:
    """The mode a plain ``open(path, "w")`` would give: the existing file's, else 0666 minus the umask."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _write_atomic(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _new_file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)  # mkstemp creates the file 0600
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
    from pasodoble.errors import ConfigError
    from pasodoble.verify import Grader

    cfg = GraderConfig()
    if args.timeout is not None:
        cfg.timeout_s = args.timeout
    if args.workers is not None:
        cfg.workers = args.workers
    if args.fallback is not None:
        cfg.fallback = list(args.fallback)
    try:
        cfg.check()  # the grader section's own ranges, named by this command's options
    except ConfigError as exc:
        message = str(exc)
        for field, option in (("grader.timeout_s", "--timeout"), ("grader.workers", "--workers")):
            message = message.replace(field, option)
        raise UserError(message.replace("grader.fallback entries", "--fallback entries")) from None

    in_path, out_path = Path(args.input), Path(args.out)
    _check_not_input(in_path, out_path)
    if out_path.is_dir():
        raise UserError(f"--out {out_path} is a directory; give the path of a file to write (OUT.jsonl)")
    check_writable(out_path.parent if str(out_path.parent) else Path("."), "--out")
    records, errors, read = _read(in_path)
    for msg in errors:
        print(f"pasodoble grade: {in_path}: {msg}", file=sys.stderr)
    if not records:
        what = f"all {len(errors)} non-blank line(s) malformed" if errors else "no JSON lines"
        print(
            f"pasodoble grade: warning: nothing to grade in {in_path} ({read}; {what}); "
            f"writing an empty {out_path}",
            file=sys.stderr,
        )
    if cfg.workers == 0 and records:
        print(
            "pasodoble grade: warning: --workers 0 grades in this process with no hard time bound "
            "(a pathological answer can run for minutes; use --workers 1 or more for the --timeout bound)",
            file=sys.stderr,
        )

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
                extract=args.extract,
            )
            for i, v in zip(idx, got, strict=True):
                verdicts[i] = v
        stats = grader.stats

    lines = []
    for rec, v in zip(records, verdicts, strict=True):
        row: dict = {"line": rec["line"]}
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
    print(f"accuracy: {k}/{n} ({100.0 * k / n:.2f}%)" if n else "accuracy: 0/0 (nothing graded)")
    if stats.timeouts or stats.errors:
        print(f"timeouts: {stats.timeouts}, parse errors: {stats.errors}", file=sys.stderr)
    if errors:
        print(f"pasodoble grade: {len(errors)} malformed line(s) skipped", file=sys.stderr)
        return 1
    return 0
