"""`pasodoble grade`: JSONL in, verdicts out in order, malformed lines reported, atomic output."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from pasodoble.cli import main


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_grade_cli_end_to_end(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    _write(
        src,
        [
            json.dumps({"id": 1, "response": "so \\boxed{5}", "gold": "5"}),
            json.dumps({"id": "b", "pred": "\\$6", "answer": "6"}),
            "not json",
            json.dumps({"response": "Step...\n#### 1,000", "gold": "1000"}),
            json.dumps({"id": 3, "response": "no answer here", "gold": "8"}),
            json.dumps({"id": 4, "gold": "8"}),
            json.dumps({"id": 5, "pred": "7", "gold": "8"}),
        ],
    )
    out = tmp_path / "sub" / "out.jsonl"
    rc = main(["grade", str(src), "--out", str(out), "--workers", "0", "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 1  # malformed lines
    assert "accuracy: 3/5 (60.00%)" in captured.out
    assert "line 3" in captured.err and "line 6" in captured.err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == [  # each row carries its input line number (line 3 and 6 are malformed)
        {"line": 1, "id": 1, "pred": "5", "correct": True},
        {"line": 2, "id": "b", "pred": "\\$6", "correct": True},
        {"line": 4, "pred": "1,000", "correct": True},
        {"line": 5, "id": 3, "pred": None, "correct": False, "reason": "no_answer"},
        {"line": 7, "id": 5, "pred": "7", "correct": False, "reason": "mismatch"},
    ]
    assert [p.name for p in out.parent.iterdir()] == ["out.jsonl"]  # no temp file left


def test_grade_cli_pool_fallback_and_progress(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    _write(
        src,
        [
            json.dumps({"id": 0, "response": "The answer is 72.", "gold": "72"}),
            json.dumps({"id": 1, "response": "\\boxed{x^2+2x+1}", "gold": "(x+1)^2"}),
        ],
    )
    out = tmp_path / "out.jsonl"
    rc = main(["grade", str(src), "--out", str(out), "--workers", "1", "--timeout", "10", "--fallback"])
    captured = capsys.readouterr()
    assert rc == 0
    assert "accuracy: 1/2 (50.00%)" in captured.out
    assert "grading" in captured.err  # tqdm bar on stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0] == {"line": 1, "id": 0, "pred": None, "correct": False, "reason": "no_answer"}
    assert rows[1]["correct"] is True


def test_grade_cli_missing_input(tmp_path, capsys):
    rc = main(["grade", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert len(err) == 1 and "input file not found" in err[0]
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.parametrize("how", ["same", "relative", "symlink", "hardlink"])
def test_grade_cli_refuses_out_equal_to_input(tmp_path, capsys, monkeypatch, how):
    src = tmp_path / "in.jsonl"
    _write(src, [json.dumps({"pred": "5", "gold": "5"})])
    before = src.read_bytes()
    if how == "same":
        out = str(src)
    elif how == "relative":
        monkeypatch.chdir(tmp_path)
        (tmp_path / "sub").mkdir()
        out = "sub/../in.jsonl"
    elif how == "symlink":
        (tmp_path / "link.jsonl").symlink_to(src)
        out = str(tmp_path / "link.jsonl")
    else:
        os.link(src, tmp_path / "hard.jsonl")
        out = str(tmp_path / "hard.jsonl")
    rc = main(["grade", str(src), "--out", out, "--workers", "0", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert len(err) == 1 and "is the input file" in err[0] and "another file" in err[0]
    assert src.read_bytes() == before  # the input is untouched


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_grade_cli_output_respects_the_umask(tmp_path, capsys, umask, mode):
    src = tmp_path / "in.jsonl"
    _write(src, [json.dumps({"pred": "5", "gold": "5"})])
    out = tmp_path / "out.jsonl"
    old = os.umask(umask)
    try:
        rc = main(["grade", str(src), "--out", str(out), "--workers", "0", "--no-progress"])
    finally:
        os.umask(old)
    assert rc == 0
    assert stat.S_IMODE(out.stat().st_mode) == mode


def test_grade_cli_keeps_the_mode_of_an_existing_output(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    _write(src, [json.dumps({"pred": "5", "gold": "5"})])
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")
    out.chmod(0o640)
    assert main(["grade", str(src), "--out", str(out), "--workers", "0", "--no-progress"]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    assert json.loads(out.read_text()) == {"line": 1, "pred": "5", "correct": True}


@pytest.mark.parametrize(
    "content,what",
    [
        (b"", "read 0 bytes, 0 line(s), 0 blank; no JSON lines"),
        (b"\n  \n\n", "read 5 bytes, 3 line(s), 3 blank; no JSON lines"),
        (b"nope\n[1]\n", "read 9 bytes, 2 line(s), 0 blank; all 2 non-blank line(s) malformed"),
    ],
)
def test_grade_cli_warns_on_input_with_nothing_to_grade(tmp_path, capsys, content, what):
    src = tmp_path / "in.jsonl"
    src.write_bytes(content)
    out = tmp_path / "out.jsonl"
    rc = main(["grade", str(src), "--out", str(out), "--no-progress"])
    captured = capsys.readouterr()
    assert rc == (1 if b"nope" in content else 0)
    warning = [line for line in captured.err.splitlines() if "warning" in line]
    assert len(warning) == 1 and "nothing to grade" in warning[0] and f"({what})" in warning[0]
    assert "accuracy: 0/0 (nothing graded)" in captured.out
    assert out.read_text() == ""


def test_grade_cli_warns_that_workers_0_has_no_time_bound(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    _write(src, [json.dumps({"pred": "5", "gold": "5"})])
    out = tmp_path / "out.jsonl"
    assert main(["grade", str(src), "--out", str(out), "--workers", "0", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "--workers 0" in err and "no hard time bound" in err
    assert main(["grade", str(src), "--out", str(out), "--workers", "1", "--no-progress"]) == 0
    assert "no hard time bound" not in capsys.readouterr().err


def test_grade_cli_flexible_extraction_takes_the_last_number(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    _write(
        src,
        [
            json.dumps(
                {"id": 0, "response": "She sells 16 - 3 - 4 = 9 eggs for $2 each.\nA: 18", "gold": "18"}
            ),
            json.dumps({"id": 1, "response": "9 eggs at $2 each.\nA: 19", "gold": "18"}),
            json.dumps({"id": 2, "response": "First 3, then 4, so \\boxed{5}. Check: 7", "gold": "5"}),
            json.dumps({"id": 3, "response": "The answer is 12. (Not 13.)", "gold": "12"}),
            json.dumps({"id": 4, "response": "no digits at all", "gold": "1"}),
        ],
    )
    out = tmp_path / "out.jsonl"
    args = ["grade", str(src), "--out", str(out), "--workers", "0", "--no-progress"]
    assert main(args) == 0
    strict = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["pred"], r["correct"]) for r in strict] == [
        (None, False),  # strict: "A: 18" is no box, "####" or "answer is"
        (None, False),
        ("5", True),
        ("12", True),
        (None, False),
    ]
    assert main(args + ["--extract", "flexible"]) == 0
    assert "accuracy: 3/5 (60.00%)" in capsys.readouterr().out
    flexible = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["pred"], r["correct"]) for r in flexible] == [
        ("18", True),
        ("19", False),
        ("5", True),  # a box still wins over a later number
        ("12", True),  # so does "answer is"
        (None, False),
    ]


BENCH = Path(__file__).parents[2].parent / "shared" / "benchmarks"


def test_grade_cli_flexible_on_gsm8k_reference_style_answers(tmp_path, capsys):
    """GSM8K's reference solutions ending in ``A: N`` (the few-shot style of base models) instead of
    ``#### N``: with the gold N labelled correct, with N + 1 labelled wrong. Flexible agrees with every
    label; strict finds no answer in any of them."""
    path = BENCH / "gsm8k.jsonl"
    if not path.exists():
        pytest.skip(f"shared benchmark file not found: {path}")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    lines, labels = [], []
    for r in rows:
        head = r["solution"].rpartition("####")[0].rstrip()
        wrong = (
            f"{int(r['answer'].replace(',', '')) + 1:,}" if "," in r["answer"] else str(int(r["answer"]) + 1)
        )
        for ans, ok in ((r["answer"], True), (wrong, False)):
            lines.append(json.dumps({"id": r["id"], "response": f"{head}\nA: {ans}", "gold": r["answer"]}))
            labels.append(ok)
    src = tmp_path / "gsm8k_a.jsonl"
    _write(src, lines)
    out = tmp_path / "graded.jsonl"
    args = ["grade", str(src), "--out", str(out), "--no-progress"]
    assert main(args + ["--extract", "flexible"]) == 0
    graded = [json.loads(line) for line in out.read_text().splitlines()]
    assert [g["correct"] for g in graded] == labels
    assert f"accuracy: {len(rows)}/{2 * len(rows)} (50.00%)" in capsys.readouterr().out
    assert main(args) == 0  # strict (the default)
    assert {json.loads(line)["reason"] for line in out.read_text().splitlines()} == {"no_answer"}
