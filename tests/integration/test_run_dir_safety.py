"""Issue 16, run directories: --overwrite deletes only what the trainer wrote, one run per directory at a
time, --resume refuses overrides that change the run, a file as run.out_dir is a one-line error, and a
second Ctrl-C aborts (the first one's message and checkpoint: test_train_cli.py's signal test)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import yaml

from pasodoble.errors import UserError
from pasodoble.rundir import MARKER, RunLock, clear_run_dir

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny.yaml"
HERE = Path(__file__).resolve().parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture
def cli(capsys):
    """``pasodoble train ARGS`` in this process (the console script's error handling, no start-up cost):
    returns (exit code, stderr)."""
    from pasodoble.cli import main

    def run(*args: str) -> tuple[int, str]:
        code = main(["train", *args])
        return code, capsys.readouterr().err

    return run


def _one_line_error(result: tuple[int, str], *needles: str) -> str:
    code, err = result
    err = err.strip()
    assert code != 0, err
    assert "Traceback" not in err and err.count("\n") == 0, err
    for needle in needles:
        assert needle in err, err
    return err


def test_overwrite_never_deletes_what_the_trainer_did_not_write(tmp_path, cli):
    # a directory that happens to hold a config.yaml (the old rule) but is someone's work
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "config.yaml").write_text("mine: true\n")
    (thesis / "thesis.tex").write_text("\\chapter{Results}")
    _one_line_error(cli(str(TINY), f"run.out_dir={thesis}", "--overwrite"), "refuses to delete", MARKER)
    assert (thesis / "thesis.tex").exists() and (thesis / "config.yaml").read_text() == "mine: true\n"

    # a real run directory in which the user later put a file of their own
    run = tmp_path / "run"
    done = cli(str(TINY), f"run.out_dir={run}", "run.max_steps=1", "run.progress=false")
    assert done[0] == 0, done[1][-2000:]
    assert (run / MARKER).is_file()
    (run / "analysis.ipynb").write_text("{}")
    _one_line_error(cli(str(TINY), f"run.out_dir={run}", "--overwrite"), "analysis.ipynb", "did not write")
    assert (run / "analysis.ipynb").exists() and (run / "checkpoints").is_dir()

    # once the user's file is gone, --overwrite replaces the run (and only then)
    (run / "analysis.ipynb").unlink()
    again = cli(str(TINY), f"run.out_dir={run}", "run.max_steps=1", "run.progress=false", "--overwrite")
    assert again[0] == 0, again[1][-2000:]


def test_a_file_as_run_out_dir_is_a_one_line_error(tmp_path, cli):
    target = tmp_path / "results.txt"
    target.write_text("keep")
    _one_line_error(cli(str(TINY), f"run.out_dir={target}"), "is a file", "run.out_dir")
    _one_line_error(cli(str(TINY), f"run.out_dir={target}", "--overwrite"), "is a file")
    assert target.read_text() == "keep"


def test_a_run_directory_in_use_is_refused_with_the_pid(tmp_path, cli):
    run = tmp_path / "run"
    done = cli(str(TINY), f"run.out_dir={run}", "run.max_steps=1", "run.progress=false")
    assert done[0] == 0, done[1][-2000:]
    with RunLock(run):  # this test process plays the run that is still going
        pid = str(os.getpid())
        _one_line_error(cli("--resume", str(run), "run.max_steps=2"), "in use by PID " + pid)
        _one_line_error(cli(str(TINY), f"run.out_dir={run}", "--overwrite"), "in use by PID " + pid)
        with pytest.raises(UserError, match="in use by PID"):
            clear_run_dir(run)
    assert (run / "checkpoints").is_dir()  # nothing was deleted while it was in use
    # the lock goes with its holder: the run resumes now
    resumed = cli("--resume", str(run), "run.max_steps=2", "run.progress=false")
    assert resumed[0] == 0, resumed[1][-2000:]


def test_resume_refuses_overrides_that_change_the_run_and_says_what_it_applied(tmp_path, cli):
    run = tmp_path / "run"
    done = cli(str(TINY), f"run.out_dir={run}", "run.max_steps=2", "run.progress=false")
    assert done[0] == 0, done[1][-2000:]
    before = (run / "config.yaml").read_text()
    _one_line_error(
        cli("--resume", str(run), "proposer.group_size=2"), "proposer.group_size", "start a new run"
    )
    _one_line_error(
        cli("--resume", str(run), "run.seed=5", "rewards.tau_low=0.1"), "run.seed, rewards.tau_low"
    )
    _one_line_error(
        cli("--resume", str(run), f"run.out_dir={tmp_path / 'elsewhere'}"), "run.out_dir cannot change"
    )
    _one_line_error(cli("--resume", str(run), "run.max_steps=1"), "below the step", "2 steps done")
    assert (run / "config.yaml").read_text() == before  # nothing refused was recorded
    ok = cli("--resume", str(run), "run.max_steps=3", "run.threads=1", "run.seed=0", "run.progress=false")
    assert ok[0] == 0, ok[1][-2000:]
    assert "applied run.max_steps=3 (was 2), run.threads=1 (was 0)" in ok[1]  # run.seed=0 unchanged
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["run"]["max_steps"] == 3 and saved["proposer"]["group_size"] == 4


def test_second_ctrl_c_aborts():
    from pasodoble.train import Trainer

    trainer = Trainer.__new__(Trainer)  # only the signal handler's state is needed
    trainer._stop_signal = None
    trainer._on_signal(signal.SIGINT, None)
    assert trainer._stop_signal == signal.SIGINT  # the first one asks for a clean stop
    with pytest.raises(KeyboardInterrupt):
        trainer._on_signal(signal.SIGINT, None)


def test_a_bad_role_model_path_names_its_own_field(tmp_path, cli):
    """Issue 16.9: an error about solver.model_path used to name model.name_or_path."""
    err = _one_line_error(
        cli(str(TINY), f"solver.model_path={tmp_path / 'no_such_model'}", f"run.out_dir={tmp_path / 'run'}"),
        "(solver.model_path)",
        "does not exist",
    )
    assert "model.name_or_path" not in err


def test_demo_overwrite_deletes_only_what_a_demo_wrote(tmp_path, capsys):
    """Issue 16.6, the demo's side: --overwrite used to delete any directory holding run/."""
    from pasodoble.cli import main
    from pasodoble.rundir import clear_owned
    from pasodoble.toy.demo import DEMO_MARKER, DEMO_OWNED

    mine = tmp_path / "mine"
    (mine / "run").mkdir(parents=True)
    (mine / "notes.md").write_text("keep")
    assert main(["demo", "--out", str(mine), "--overwrite"]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "refuses to delete" in err and DEMO_MARKER in err, err
    assert (mine / "notes.md").read_text() == "keep"

    demo = tmp_path / "demo"
    for name in ("run", "eval", "solver_final"):
        (demo / name).mkdir(parents=True)
    for name in (DEMO_MARKER, "summary.json", "report.md", "accuracy.png"):
        (demo / name).write_text("x")
    (demo / "draft.tex").write_text("keep")
    with pytest.raises(UserError, match=r"draft\.tex"):
        clear_owned(demo, marker=DEMO_MARKER, owned=DEMO_OWNED, writer="pasodoble demo", field="--out")
    assert (demo / "run").is_dir()
    (demo / "draft.tex").unlink()
    clear_owned(demo, marker=DEMO_MARKER, owned=DEMO_OWNED, writer="pasodoble demo", field="--out")
    assert list(demo.iterdir()) == []
