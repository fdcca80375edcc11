"""`pasodoble sft build-data` and `sft train` options come from their dataclasses (one help text per field)."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from pasodoble.commands import sft as sft_command
from pasodoble.commands.options import dataclass_values
from pasodoble.sft.build_data import BuildDataConfig
from pasodoble.sft.train import SFTConfig


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pasodoble sft")
    sft_command.add_arguments(parser)
    return parser


def _subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


@pytest.mark.parametrize(
    ("name", "cls", "skip"), [("build-data", BuildDataConfig, {"extra"}), ("train", SFTConfig, set())]
)
def test_every_field_is_an_option_with_its_help(name, cls, skip):
    actions = {a.dest: a for a in _subparser(name)._actions if a.dest != "help"}
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    assert set(actions) == set(fields)
    for dest, action in actions.items():
        assert action.help.startswith(fields[dest].metadata["help"]), dest


def test_build_data_values_reach_the_config():
    args = _parser().parse_args(
        [
            "build-data",
            "--teacher",
            "tiny",
            "--size",
            "3",
            "--out",
            "o",
            "--no-progress",
            "--leak-check",
            "off",
            "--temperature",
            "0.7",
            "--check-samples",
            "3",
        ]
    )
    cfg = BuildDataConfig(**dataclass_values(args, BuildDataConfig))
    assert (cfg.teacher, cfg.size, cfg.out, cfg.progress, cfg.leak_check) == ("tiny", 3, "o", False, "off")
    assert (cfg.temperature, cfg.check_samples, cfg.max_tokens, cfg.min_kept) == (0.7, 3, None, 1)
    default = _parser().parse_args(["build-data", "--teacher", "t", "--size", "1", "--out", "o"])
    assert BuildDataConfig(**dataclass_values(default, BuildDataConfig)).progress is True


def test_build_data_refuses_a_bad_choice(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(
            ["build-data", "--teacher", "t", "--size", "1", "--out", "o", "--leak-check", "maybe"]
        )
    assert "--leak-check" in capsys.readouterr().err
