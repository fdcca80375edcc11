"""Issue 22, hostile inputs (second round), through the command line: every command under a bad --out,
resume of a hand-edited config, JSONL line separators, locks, write errors. Each test name starts with
the class it covers. Commands run in this process through ``pasodoble.cli.main`` (the console script's
error handling, without its start-up cost)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from pasodoble.rundir import MARKER, RunLock

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny.yaml"


@pytest.fixture
def cli(capsys):
    from pasodoble.cli import main

    def run(*args: str) -> tuple[int, str]:
        code = main([*args])
        return code, capsys.readouterr().err

    return run


def one_line_error(result: tuple[int, str], *needles: str) -> str:
    code, err = result
    err = err.strip()
    assert code != 0, err
    assert "Traceback" not in err and err.count("\n") == 0, err
    for needle in needles:
        assert needle in err, err
    return err


def all_commands(tmp_path: Path, out: Path) -> dict[str, list[str]]:
    """Each command with ``out`` as its output location (and small valid inputs)."""
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n")
    graded = tmp_path / "in.jsonl"
    graded.write_text(json.dumps({"pred": "2", "gold": "2"}) + "\n")
    return {
        "train": ["train", str(TINY), f"run.out_dir={out}", "run.max_steps=1", "run.progress=false"],
        "eval": ["eval", "--model", "tiny", "--benchmarks", str(bench), "--samples", "1", "--out", str(out)],
        "export": ["export", str(tmp_path / "no_ckpt"), "--role", "solver", "--out", str(out)],
        "sft": [
            "sft",
            "train",
            "--role",
            "solver",
            "--model",
            "tiny",
            "--data",
            str(tmp_path / "d.jsonl"),
            "--out",
            str(out),
        ],
        "report": ["report", str(tmp_path / "results.json"), "--out", str(out)],
        "analyze": [
            "analyze",
            "memorization",
            "--model",
            "tiny",
            "--questions",
            str(bench),
            "--out",
            str(out),
        ],
        "grade": ["grade", str(graded), "--out", str(out / "verdicts.jsonl")],
        "toy build": ["toy", "build", "--out", str(out)],
        "demo": ["demo", "--out", str(out), "--steps", "1"],
    }


def test_class11_every_command_refuses_an_out_under_a_regular_file(tmp_path, cli):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("keep")
    for name, argv in all_commands(tmp_path, blocker / "out").items():
        one_line_error(cli(*argv), str(blocker))
        assert blocker.read_text() == "keep", name


def test_class11_every_command_refuses_an_existing_file_as_out(tmp_path, cli):
    target = tmp_path / "results.txt"
    target.write_text("keep")
    for name, argv in all_commands(tmp_path, target).items():
        if name == "grade":  # grade writes a file: its --out may be a file, not a directory
            argv = ["grade", argv[1], "--out", str(tmp_path)]
            one_line_error(cli(*argv), "is a directory")
            continue
        one_line_error(cli(*argv), str(target))
        assert target.read_text() == "keep", name
    # train --resume of a file
    one_line_error(cli("train", "--resume", str(target)), "not a run directory")


def test_class11_every_command_refuses_a_read_only_out(tmp_path, cli, monkeypatch):
    """The tests run as root, for whom a read-only mode does not stop writes: the permission check is
    made to see a read-only directory (os.access false there); the real EACCES path is the CLI's OSError
    handler, checked below with a write that fails."""
    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode, **kw: False if Path(p) == ro else real_access(p, mode, **kw)
    )
    for name, argv in all_commands(tmp_path, ro / "out").items():
        one_line_error(cli(*argv), "not writable", str(ro))
        assert list(ro.iterdir()) == [], name


def test_class11_an_os_error_inside_a_command_is_one_line(tmp_path, cli, monkeypatch):
    import pasodoble.eval.report as report

    def denied(*a, **kw):
        raise PermissionError(13, "Permission denied", str(tmp_path / "out" / "report.md"))

    monkeypatch.setattr(report, "write_report", denied)
    one_line_error(cli("report", "x.json", "--out", str(tmp_path / "out")), "report.md: Permission denied")


def test_class11_checkpoint_write_error_is_one_line_and_keeps_the_last_checkpoint(tmp_path, cli, monkeypatch):
    run = tmp_path / "run"
    ok = cli("train", str(TINY), f"run.out_dir={run}", "run.max_steps=1", "run.progress=false")
    assert ok[0] == 0, ok[1][-2000:]
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    import pasodoble.checkpoint as checkpoint

    def full(*a, **kw):  # what torch raises on a full disk
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1216 vs 1110")

    monkeypatch.setattr(checkpoint.torch, "save", full)
    code, err = cli("train", "--resume", str(run), "run.max_steps=2", "run.progress=false")
    assert code != 0 and "Traceback" not in err
    err = err.strip().splitlines()[-1]  # after the resume's own two lines (what it applied, the layout)
    assert "cannot write the checkpoint of step 2" in err and "unexpected pos" in err
    assert "is intact" in err and before[0] in err
    assert [
        p for p in sorted(p.name for p in (run / "checkpoints").iterdir()) if not p.endswith(".tmp")
    ] == before


def test_class12_a_run_that_never_started_leaves_nothing(tmp_path, cli):
    run = tmp_path / "new"
    one_line_error(
        cli("train", str(TINY), f"run.out_dir={run}", f"solver.model_path={tmp_path / 'missing'}"),
        "solver.model_path",
    )
    assert not run.exists()  # issue: config.yaml stayed behind, and the retry needed --overwrite
    empty = tmp_path / "empty"  # ours: an empty directory the user made stays, empty
    empty.mkdir()
    one_line_error(
        cli("train", str(TINY), f"run.out_dir={empty}", f"proposer.model_path={tmp_path / 'missing'}"),
        "proposer.model_path",
    )
    assert empty.is_dir() and list(empty.iterdir()) == []


def test_class3_resume_refuses_a_hand_edited_config(tmp_path, cli):
    run = tmp_path / "run"
    ok = cli("train", str(TINY), f"run.out_dir={run}", "run.max_steps=1", "run.progress=false")
    assert ok[0] == 0, ok[1][-2000:]
    original = (run / "config.yaml").read_text()
    for section, field, value in (
        ("run", "seed", 7),
        ("solver", "group_size", 3),
        ("proposer", "learning_rate", 0.5),
    ):
        edited = yaml.safe_load(original)
        edited[section][field] = value  # issue: seed 0 -> 7, group_size 4 -> 3; ours: a learning rate
        (run / "config.yaml").write_text(yaml.safe_dump(edited, sort_keys=False))
        one_line_error(
            cli("train", "--resume", str(run), "run.max_steps=2"), f"{section}.{field}", "edited by hand"
        )
    # an operational field edited by hand is fine (as the same override would be)
    edited = yaml.safe_load(original)
    edited["run"]["max_steps"] = 2
    edited["grader"]["timeout_s"] = 9.0  # class 10: allowed on resume
    (run / "config.yaml").write_text(yaml.safe_dump(edited, sort_keys=False))
    done = cli("train", "--resume", str(run), "run.progress=false", "grader.timeout_s=7")
    assert done[0] == 0, done[1][-2000:]


def test_class10_a_run_started_with_a_timeout_this_version_refuses_is_repaired_on_resume(tmp_path, cli):
    """A run directory written before the range check (grader.timeout_s: .inf in config.yaml, or 1e12)
    cannot resume as it is, but the resume override grader.timeout_s=VALUE repairs it."""
    run = tmp_path / "run"
    ok = cli("train", str(TINY), f"run.out_dir={run}", "run.max_steps=1", "run.progress=false")
    assert ok[0] == 0, ok[1][-2000:]
    for bad in (float("inf"), 1e12):
        edited = yaml.safe_load((run / "config.yaml").read_text())
        edited["grader"]["timeout_s"] = bad
        (run / "config.yaml").write_text(yaml.safe_dump(edited, sort_keys=False))
        one_line_error(
            cli("train", "--resume", str(run), "run.max_steps=2"), "grader.timeout_s", "repaired on resume"
        )
    done = cli("train", "--resume", str(run), "run.max_steps=2", "run.progress=false", "grader.timeout_s=5")
    assert done[0] == 0, done[1][-2000:]
    assert yaml.safe_load((run / "config.yaml").read_text())["grader"]["timeout_s"] == 5.0


def test_class5_grade_splits_jsonl_on_newlines_only(tmp_path, cli):
    rows = [
        {"id": "a", "pred": "5", "gold": "5", "note": "line\u2028separator"},  # issue: U+2028
        {"id": "b", "pred": "6", "gold": "7", "note": "next\u0085line"},  # issue: U+0085
        {"id": "c", "pred": "8", "gold": "8", "note": "form\x0cfeed and \x1d group"},  # ours
    ]
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    text = text.replace("form", "bare\rCR form")  # issue: a bare CR inside a string
    src = tmp_path / "in.jsonl"
    src.write_bytes(text.encode())
    out = tmp_path / "out.jsonl"
    code, err = cli("grade", str(src), "--out", str(out), "--no-progress")
    assert code == 0, err
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(g["line"], g["id"], g["correct"]) for g in got] == [
        (1, "a", True),
        (2, "b", False),
        (3, "c", True),
    ]


def test_class7_eval_and_analyze_refuse_nan_and_non_positive_counts(tmp_path, cli):
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n")
    base = ["eval", "--model", "tiny", "--benchmarks", str(bench), "--out", str(tmp_path / "e")]
    one_line_error(cli(*base, "--temperature", "nan"), "--temperature")  # issue
    one_line_error(cli(*base, "--temperature", "inf"), "--temperature")  # ours
    one_line_error(cli(*base, "--batch-size", "0"), "--batch-size")  # class 12
    one_line_error(cli(*base, "--seed", "-1"), "--seed")  # ours
    mem = [
        "analyze",
        "memorization",
        "--model",
        "tiny",
        "--questions",
        str(bench),
        "--out",
        str(tmp_path / "m"),
    ]
    one_line_error(cli(*mem, "--limit", "0"), "--limit must be >= 1")  # issue
    one_line_error(cli(*mem, "--limit", "-1"), "--limit must be >= 1")  # issue
    one_line_error(cli(*mem, "--batch-size", "0"), "--batch-size")  # class 12
    assert not (tmp_path / "e").exists() and not (tmp_path / "m").exists()


def test_class8_a_refused_run_leaves_the_users_lock_file_alone(tmp_path, cli):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / ".lock").write_text("my notes\n")  # issue: overwritten with a PID
    one_line_error(cli("train", str(TINY), f"run.out_dir={mine}"), "not empty")
    one_line_error(cli("train", str(TINY), f"run.out_dir={mine}", "--overwrite"), "not empty")
    assert (mine / ".lock").read_text() == "my notes\n" and sorted(p.name for p in mine.iterdir()) == [
        ".lock"
    ]
    other = tmp_path / "other"  # ours: a directory with a file of the user's gets no .lock either
    other.mkdir()
    (other / "thesis.tex").write_text("x")
    one_line_error(cli("train", str(TINY), f"run.out_dir={other}"), "not empty")
    assert sorted(p.name for p in other.iterdir()) == ["thesis.tex"]


def test_class8_eval_out_is_locked_and_not_the_model_directory(tmp_path, cli):
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    base = ["--benchmarks", str(bench), "--samples", "1", "--no-progress"]
    one_line_error(cli("eval", "--model", str(model), *base, "--out", str(model)), "is the --model directory")
    one_line_error(cli("eval", "--model", str(model), *base, "--out", str(model / "e")), "inside the --model")
    mem = ["analyze", "memorization", "--model", str(model), "--questions", str(bench)]
    one_line_error(cli(*mem, "--out", str(model)), "is the --model directory")
    out = tmp_path / "e"
    with RunLock(out, field="--out"):  # another evaluation into the same --out is still going
        one_line_error(cli("eval", "--model", "tiny", *base, "--out", str(out)), "in use", "--out")
    assert list(out.iterdir()) == []


def test_class8_toy_build_refuses_someone_elses_directory(tmp_path, cli):
    other = tmp_path / "other"
    other.mkdir()
    (other / "paper.tex").write_text("x")
    one_line_error(cli("toy", "build", "--out", str(other)), "holds no toy build")
    assert sorted(p.name for p in other.iterdir()) == ["paper.tex"]
    (other / "paper.tex").unlink()
    (other / MARKER).write_text("{}")  # ours: a training run's directory is not a toy build either
    one_line_error(cli("toy", "build", "--out", str(other)), "holds no toy build")


def test_also_eval_model_file_demo_out_dir_and_models(tmp_path, cli):
    f = tmp_path / "model.bin"
    f.write_text("x")
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n")
    one_line_error(
        cli("eval", "--model", str(f), "--benchmarks", str(bench), "--out", str(tmp_path / "e")), "is a file"
    )
    one_line_error(cli("demo", "--out", str(tmp_path / "d"), f"run.out_dir={tmp_path / 'x'}"), "run.out_dir")
    one_line_error(cli("demo", "--out", str(tmp_path / "d"), "--seed", "-1"), "--seed")  # class 12
    one_line_error(cli("demo", "--out", str(tmp_path / "d"), "--models", str(tmp_path / "none")), "--models")
    one_line_error(cli("demo", "--out", str(tmp_path / "d"), "--models", str(f)), "--models")
    assert not (tmp_path / "d").exists()
