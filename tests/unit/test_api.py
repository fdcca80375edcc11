"""The Python API (``import pasodoble as pd``): a cheap import, the public surface, validation before
anything loads, small result dataclasses, and one train -> resume -> export -> evaluate pass on the tiny
models."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import pasodoble as pd
from pasodoble import api

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny.yaml"


def test_import_is_cheap_and_lazy():
    """``import pasodoble`` loads none of the heavy libraries; a public name loads its module on use."""
    code = (
        "import sys, pasodoble as pd\n"
        "heavy = [m for m in ('torch', 'transformers', 'numpy', 'yaml', 'pasodoble.api') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "pd.load_config\n"
        "assert 'pasodoble.api' in sys.modules and 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_version_agrees_with_pyproject():
    (version,) = re.findall(r'(?m)^version = "([^"]+)"$', (ROOT / "pyproject.toml").read_text())
    assert pd.__version__ == version == "0.2.0"


def test_public_surface_resolves():
    assert pd.__all__ == sorted(pd.__all__) and len(set(pd.__all__)) == len(pd.__all__)
    for name in pd.__all__:
        assert getattr(pd, name) is not None
        assert name in dir(pd)
    assert pd.Config is __import__("pasodoble.config").config.Config
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        pd.nope  # noqa: B018


def test_train_and_export_stay_functions_after_their_modules_are_imported():
    import importlib

    import pasodoble.export  # noqa: F401
    import pasodoble.train  # noqa: F401  (the import system binds pasodoble.train to the module)

    assert pd.train is api.train and pd.export is api.export
    assert importlib.import_module("pasodoble.train").run_training.__module__ == "pasodoble.train"
    assert sys.modules["pasodoble.export"].export_role.__module__ == "pasodoble.export"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: setattr(c.grpo, "loss_type", "ppo"), "grpo.loss_type must be one of"),
        (lambda c: setattr(c.solver, "group_size", 1), "solver.group_size must be >= 2"),
        (lambda c: setattr(c.run, "max_steps", "2"), "run.max_steps must be of type int; got '2'"),
        (lambda c: setattr(c.run, "progress", "no"), "run.progress must be of type bool"),
        (lambda c: setattr(c, "grpo", {"loss_type": "grpo"}), "grpo is a section"),
        (lambda c: setattr(c.rollout, "temperature", float("nan")), "rollout.temperature must be a finite"),
        (lambda c: setattr(c.grader, "fallback", ("hashes",)), "grader.fallback must be a list"),
    ],
)
def test_train_refuses_a_config_changed_in_python_before_anything_loads(
    tmp_path, monkeypatch, change, message
):
    """The issue: ``loss_type="ppo"`` failed only after the models loaded and generated, ``group_size=1``
    ran with every step skipped. Now both are one-line ConfigErrors at ``pd.train``."""
    import pasodoble.train as _  # noqa: F401

    def must_not_run(*args, **kwargs):
        raise AssertionError("run_training reached")

    monkeypatch.setattr(sys.modules["pasodoble.train"], "run_training", must_not_run)
    cfg = pd.load_config(TINY, [f"run.out_dir={tmp_path / 'run'}"])
    change(cfg)
    with pytest.raises(pd.ConfigError, match=message) as info:
        pd.train(cfg)
    assert "\n" not in str(info.value)
    with pytest.raises(pd.ConfigError, match=message):
        pd.validate(cfg)
    assert not (tmp_path / "run").exists()


def test_a_hand_built_config_is_validated_and_normalized():
    cfg = pd.Config()
    cfg.grpo.beta = 0  # an int for a float field: taken, as a YAML file's 0 is
    assert pd.validate(cfg) is cfg and cfg.grpo.beta == 0.0 and isinstance(cfg.grpo.beta, float)
    cfg.solver.group_size = 1
    with pytest.raises(pd.ConfigError, match="solver.group_size must be >= 2"):
        pd.validate(cfg)
    with pytest.raises(pd.ConfigError, match="expected a pasodoble.Config; got dict"):
        pd.validate({"run": {}})
    with pytest.raises(pd.ConfigError, match="list of section.field=value strings"):
        pd.train(TINY, "run.max_steps=2")


def test_train_applies_overrides_to_a_copy(monkeypatch, tmp_path):
    import pasodoble.train as _  # noqa: F401

    seen = {}

    def fake_run_training(cfg, *, overwrite=False):
        seen["cfg"], seen["overwrite"] = cfg, overwrite
        return {"steps": 3, "updates": 2, "skips": 1, "interrupted": False}

    monkeypatch.setattr(sys.modules["pasodoble.train"], "run_training", fake_run_training)
    cfg = pd.load_config(TINY)
    result = pd.train(cfg, [f"run.out_dir={tmp_path}", "run.max_steps=3"], overwrite=True)
    assert result == pd.TrainResult(3, 2, 1, False, tmp_path)
    assert seen["cfg"] is not cfg and seen["cfg"].run.max_steps == 3 and seen["overwrite"] is True
    assert cfg.run.max_steps == 4  # the caller's config is unchanged
    assert result.summary() == {"steps": 3, "updates": 2, "skips": 1, "interrupted": False}
    with pytest.raises(pd.ConfigError, match="unknown config key 'run.max_step'"):
        pd.train(cfg, ["run.max_step=3"])


def test_grade_one_pair_or_two_sequences():
    cfg = pd.Config()
    cfg.grader.workers = 0
    assert pd.grade("so the answer is \\boxed{\\frac{1}{2}}", "0.5", config=cfg) == pd.Verdict(
        "\\frac{1}{2}", True, None
    )
    verdicts = pd.grade(["\\boxed{4}", "no box", "7"], ["4", "4", "7"], config=cfg)
    assert [v.correct for v in verdicts] == [True, False, False]
    assert verdicts[1].reason == "no_answer"
    assert pd.grade(["7"], ["7"], extracted=True, config=cfg)[0].correct
    with pytest.raises(TypeError, match="one response and one gold answer"):
        pd.grade("\\boxed{4}", ["4"])


def test_evaluate_errors_name_the_command_line_option(tmp_path):
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n")
    for kwargs, message in [
        ({"samples": 0}, "--samples must be >= 1"),
        ({"temperature": float("nan")}, "--temperature must be a finite number"),
        ({"max_new_tokens": 0}, "--max-new-tokens must be >= 1"),
        ({"few_shot": 5}, "--few-shot must be 0"),
        ({"backend": "sglang"}, "--backend must be hf or vllm"),
    ]:
        with pytest.raises(pd.UserError, match=message):
            pd.evaluate("tiny", str(bench), out=tmp_path / "e", **kwargs)
    with pytest.raises(pd.UserError, match="--role applies to a training checkpoint"):
        pd.evaluate("tiny", [str(bench)], out=tmp_path / "e", role="solver")
    with pytest.raises(pd.UserError, match="not a training checkpoint"):
        pd.export(tmp_path, "solver", tmp_path / "x")
    assert not (tmp_path / "e").exists()


@pytest.mark.slow
def test_train_resume_export_evaluate_on_the_tiny_models(tmp_path, one_thread):
    """The whole loop from Python: results are the dataclasses, files where they say."""
    run_dir = tmp_path / "run"
    cfg = pd.load_config(TINY, ["run.max_steps=1", "run.progress=false", "run.checkpoint_every=1"])
    cfg.run.out_dir = str(run_dir)
    first = pd.train(cfg)
    assert first == pd.TrainResult(
        steps=1, updates=first.updates, skips=first.skips, interrupted=False, run_dir=run_dir
    )
    assert first.updates + first.skips == 1 and (run_dir / "solver_final" / "config.json").is_file()

    with pytest.raises(pd.ConfigError, match="--resume cannot change solver.group_size"):
        pd.resume(run_dir, ["solver.group_size=8"])
    resumed = pd.resume(run_dir, ["run.max_steps=2"])
    assert resumed.steps == 2 and resumed.run_dir == run_dir and not resumed.interrupted

    ckpt = run_dir / "checkpoints" / "step_00000002"
    exported = pd.export(ckpt, "solver", tmp_path / "solver")
    assert exported == pd.ExportResult(tmp_path / "solver", ckpt, "solver", 2, "none", False)
    assert (tmp_path / "solver" / "config.json").is_file()

    bench = tmp_path / "sums.jsonl"
    bench.write_text(
        "".join(json.dumps({"problem": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n" for i in range(3))
    )
    result = pd.evaluate(
        str(exported.out_dir), [str(bench)], out=tmp_path / "eval", samples=2, max_new_tokens=4,
        grader_workers=0, progress=False, device="cpu",
    )  # fmt: skip
    assert isinstance(result, pd.EvalResult) and result.out_dir == tmp_path / "eval"
    assert set(result.benchmarks) == {"sums"} and result.benchmarks["sums"]["n"] == 3
    assert 0.0 <= result.pass_at_1 <= 1.0 and result.pass_at_1 == result.average["pass@1"]
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["benchmarks"] == result.benchmarks
    assert "| pass@1" in result.markdown()


def test_run_training_itself_validates(tmp_path):
    """The lower-level entry (``pasodoble.train.run_training``) checks a config changed in Python too."""
    from pasodoble.train import run_training

    cfg = pd.load_config(TINY, [f"run.out_dir={tmp_path / 'run'}"])
    cfg.grpo.loss_type = "ppo"
    with pytest.raises(pd.ConfigError, match="grpo.loss_type must be one of"):
        run_training(cfg)
    assert not (tmp_path / "run").exists()
