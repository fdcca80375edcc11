"""The command line itself: `pasodoble --help` loads no heavy library, options go anywhere among a
command's positionals, errors keep argparse's usage exit code."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pasodoble.cli import COMMANDS, main, parse_command_args

HEAVY = ("torch", "transformers", "datasets", "accelerate", "numpy")


def test_top_level_help_imports_no_heavy_library():
    # `pasodoble --help` used to build every command's arguments, and `demo`'s imported torch (about 3 s).
    code = (
        "import sys\n"
        "from pasodoble.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "[]"
    for name in COMMANDS:
        assert name in out.stdout


@pytest.mark.parametrize(
    "argv",
    [
        ["cfg.yaml", "--overwrite", "run.out_dir=X", "run.seed=1"],
        ["--overwrite", "cfg.yaml", "run.out_dir=X", "run.seed=1"],
        ["cfg.yaml", "run.out_dir=X", "--overwrite", "run.seed=1"],
        ["cfg.yaml", "run.out_dir=X", "run.seed=1", "--overwrite"],
    ],
)
def test_train_flags_anywhere_among_overrides(argv):
    args = parse_command_args("train", argv)
    assert args.command == "train" and args.overwrite is True and args.resume is None
    assert args.config == "cfg.yaml" and args.overrides == ["run.out_dir=X", "run.seed=1"]


def test_resume_with_overrides_on_either_side():
    for argv in (["--resume", "R", "run.max_steps=8"], ["run.max_steps=8", "--resume", "R"]):
        args = parse_command_args("train", argv)
        # commands/train.py moves a lone key=value from `config` to the overrides
        assert (args.resume, args.config, args.overrides) == ("R", "run.max_steps=8", [])


def test_other_commands_taking_overrides():
    args = parse_command_args("config", ["cfg.yaml", "--markdown", "run.seed=1"])
    assert (args.config, args.overrides, args.markdown) == ("cfg.yaml", ["run.seed=1"], True)
    args = parse_command_args(
        "demo", ["--out", "d", "solver.learning_rate=1", "--overwrite", "run.threads=1"]
    )
    assert args.overwrite and args.out == "d"
    assert args.overrides == ["solver.learning_rate=1", "run.threads=1"]
    args = parse_command_args("report", ["a", "--labels", "x,y", "b", "--out", "o"])
    assert args.results == ["a", "b"] and args.labels == "x,y"


def test_nested_commands_still_parse():
    args = parse_command_args("analyze", ["memorization", "--model", "m", "--questions", "q", "--out", "o"])
    assert (args.analysis, args.model) == ("memorization", "m")


def test_config_command_end_to_end_with_a_flag_between(capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("run:\n  seed: 5\n")
    assert main(["config", str(cfg), "run.max_steps=7", "--markdown"]) == 0
    assert capsys.readouterr().out.startswith("# Configuration reference")
    assert main(["config", str(cfg), "run.max_steps=7"]) == 0
    out = capsys.readouterr().out
    assert "seed: 5" in out and "max_steps: 7" in out


def test_unknown_command_and_no_command():
    with pytest.raises(SystemExit) as info:
        main(["bogus"])
    assert info.value.code == 2
    assert main([]) == 2
