"""Config loading, overrides, coercion and validation messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from pasodoble.cli import main
from pasodoble.config import Config, ConfigError, config_reference_markdown, load_config, parse_overrides

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_are_the_reference_constants():
    cfg = load_config()
    assert cfg.proposer.group_size == 6 and cfg.solver.group_size == 6  # N, M
    r = cfg.rewards
    assert (r.tau_low, r.tau_high) == (0.2, 1.0)
    assert r.diversity_history == 100 and r.jaccard_threshold == 0.8
    assert r.diversity_min == 0.3 and r.diversity_weight == 0.2 and r.difficulty_offset == 1.1
    assert r.leak_check == "token"
    assert cfg.grpo.loss_type == "dr_grpo" and cfg.grpo.beta == 0.0
    assert cfg.grpo.epsilon_low == 0.2 and cfg.grpo.epsilon_high == 0.2 and cfg.grpo.advantage_eps == 1e-4
    assert cfg.proposer.updates_per_phase == 10 and cfg.solver.updates_per_phase == 5  # K_p, K_s
    assert cfg.buffer.patience == 3 and cfg.buffer.min_improvement == 0.01
    assert cfg.rollout.temperature == 0.6 and cfg.proposer.learning_rate == 1e-6


def test_yaml_then_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("solver:\n  group_size: 4\nrewards:\n  tau_low: 0.1\n")
    cfg = load_config(
        p,
        [
            "solver.group_size=8",
            "eval.benchmarks=math500,gsm8k",
            "eval.limit=null",
            "run.wandb_project=proj",
            "model.gradient_checkpointing=true",
        ],
    )
    assert cfg.solver.group_size == 8
    assert cfg.rewards.tau_low == 0.1
    assert cfg.eval.benchmarks == ["math500", "gsm8k"]
    assert cfg.eval.limit is None
    assert cfg.run.wandb_project == "proj"
    assert cfg.model.gradient_checkpointing is True


def test_override_types_are_coerced():
    cfg = load_config(None, ["proposer.learning_rate=1e-5", "run.max_steps=10.0", "rollout.top_p=1"])
    assert cfg.proposer.learning_rate == 1e-5 and isinstance(cfg.proposer.learning_rate, float)
    assert cfg.run.max_steps == 10 and isinstance(cfg.run.max_steps, int)
    assert cfg.rollout.top_p == 1.0


@pytest.mark.parametrize(
    "override, message",
    [
        ("solver.group_size=1", "solver.group_size must be >= 2 to compute group advantages; got 1"),
        ("run.max_steps=abc", "run.max_steps must be an integer; got 'abc'"),
        ("grpo.loss_type=ppo", "grpo.loss_type must be one of dr_grpo, grpo, dapo; got 'ppo'"),
        ("rewards.bogus=1", "unknown config key 'rewards.bogus'"),
        ("nosection.x=1", "unknown config key 'nosection'"),
        ("rewards.tau_low=1.0", "rewards.tau_low and rewards.tau_high must satisfy"),
        ("model.gradient_checkpointing=maybe", "model.gradient_checkpointing must be true or false"),
        ("solver=3", "solver is a section"),
        ("badoverride", "must have the form section.field=value"),
    ],
)
def test_validation_names_the_field(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, [override])


def test_bad_yaml_file_errors(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("solver: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    p.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(p)


def test_cli_config_error_is_one_line_exit_2(capsys):
    assert main(["config", "solver.group_size=1"]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0
    assert "solver.group_size must be >= 2" in err and "Traceback" not in err


def test_parse_overrides_nested():
    # the values stay text: each field's type parses it (issue 22, class 2)
    assert parse_overrides(["a.b=1", "a.c=x", "d=[1, 2]"]) == {"a": {"b": "1", "c": "x"}, "d": "[1, 2]"}


def test_every_field_has_help_and_reference_doc_is_current():
    import dataclasses

    cfg = Config()
    for section in dataclasses.fields(cfg):
        for f in dataclasses.fields(getattr(cfg, section.name)):
            assert f.metadata.get("help"), f"{section.name}.{f.name} has no help text"
    doc = ROOT / "docs" / "configuration.md"
    assert doc.read_text() == config_reference_markdown() + "\n", (
        "docs/configuration.md is stale: run `.venv/bin/pasodoble config --markdown > docs/configuration.md`"
    )
