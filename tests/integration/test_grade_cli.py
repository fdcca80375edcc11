"""`pasodoble grade`: JSONL in, verdicts out in order, malformed lines reported, atomic output."""

from __future__ import annotations

import json

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
    assert rows == [
        {"id": 1, "pred": "5", "correct": True},
        {"id": "b", "pred": "\\$6", "correct": True},
        {"pred": "1,000", "correct": True},
        {"id": 3, "pred": None, "correct": False, "reason": "no_answer"},
        {"id": 5, "pred": "7", "correct": False, "reason": "mismatch"},
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
    assert rows[0] == {"id": 0, "pred": None, "correct": False, "reason": "no_answer"}
    assert rows[1]["correct"] is True


def test_grade_cli_missing_input(tmp_path, capsys):
    rc = main(["grade", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert len(err) == 1 and "input file not found" in err[0]
    assert not (tmp_path / "o.jsonl").exists()
