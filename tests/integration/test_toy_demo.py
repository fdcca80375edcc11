"""`pasodoble toy build` (tiny settings) and `pasodoble demo` end to end on what it builds."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from pasodoble.cli import main
from pasodoble.errors import UserError
from pasodoble.toy.accuracy import answer_style
from pasodoble.toy.build import STAGES, BuildSettings, build, parse_setting, stage_fingerprints
from pasodoble.toy.family import parse_canonical

TINY = BuildSettings(
    heldout=500,
    validation=20,
    corpus=300,
    solver_examples=64,
    solver_epochs=1.0,
    proposer_examples=32,
    pretrain_epochs=0.2,
    pretrain_rows=8,
    pretrain_length=128,
    sft_batch_size=16,
    eval_every=2,
    threads=1,
)


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy") / "build"
    manifest = build(out, TINY, parallel=True)  # the Proposer's SFT in a child process
    return out, manifest


def test_build_makes_every_stage_and_is_deterministic(tiny_build, tmp_path):
    out, manifest = tiny_build
    for name in ("base", "solver_cold_start", "proposer_cold_start"):
        assert (out / name / "config.json").is_file() and (out / name / ".done").is_file()
    assert manifest["torch"] and manifest["transformers"]  # the versions that made these bits
    # the base is saved as the package ships it, so the cold starts are fine-tuned from the shipped base
    assert {w.dtype for w in load_file(out / "base" / "model.safetensors").values()} == {torch.bfloat16}
    assert {w.dtype for w in load_file(out / "solver_cold_start" / "model.safetensors").values()} == {
        torch.float32
    }
    curve = manifest["solver_validation_accuracy"]
    assert [p["step"] for p in curve] == [0, 2, 4]  # 64 examples (1% held out) at batch 16: 4 steps
    assert (
        list(manifest["seconds"])
        == list(STAGES)
        == [
            "data",
            "tokenizer",
            "base",
            "solver_data",
            "solver_cold_start",
            "proposer_cold_start",
        ]
    )
    assert [set(p) for p in manifest["solver_validation_styles"]] == [
        {"step", "worked_share", "worked_accuracy", "direct_accuracy"}
    ] * 3
    # the held-out problems appear in no training file
    held = {json.loads(x)["problem"] for x in (out / "data" / "heldout.jsonl").read_text().splitlines()}
    assert len(held) == 500
    for path in ("data/corpus.jsonl", "solver_data/solver_sft.jsonl", "data/proposer_sft.jsonl"):
        text = (out / path).read_text()
        assert not any(p in text for p in held)
    answers = [json.loads(x)["messages"][1]["content"] for x in (out / "solver_data/solver_sft.jsonl").open()]
    problems = [
        json.loads(x)["messages"][0]["content"] for x in (out / "solver_data/solver_sft.jsonl").open()
    ]
    direct = [p for p, a in zip(problems, answers, strict=True) if a.startswith("The answer is")]
    # of 64, at solver_direct_share 0.5 of the problems with 3 or 4 operands (solver_direct_min_operands)
    assert len(direct) == 20
    assert all(len(parse_canonical(p).operands) >= 3 for p in direct)
    # a second build from scratch, one stage after another, gives the same weights; a finished build
    # is not redone
    assert "proposer_cold_start done in" in (out / "proposer_cold_start.log").read_text()
    build(tmp_path / "again", TINY, parallel=False)
    assert not (tmp_path / "again" / "proposer_cold_start.log").exists()
    for name in ("base", "solver_cold_start", "proposer_cold_start"):
        assert _same_weights(out / name, tmp_path / "again" / name), name
    assert build(out, TINY)["seconds"] == manifest["seconds"]


def _same_weights(a, b) -> bool:
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)


def test_a_new_solver_mix_rebuilds_only_the_solver_stages(tiny_build, tmp_path):
    out, manifest = tiny_build
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "base" / "keep.txt").write_text("the base is not rebuilt")
    changed = build(copy, replace(TINY, solver_direct_share=1.0, solver_direct_min_operands=2))
    assert (copy / "base" / "keep.txt").is_file() and _same_weights(out / "base", copy / "base")
    for name in ("data", "tokenizer", "base", "proposer_cold_start"):
        assert changed["seconds"][name] == manifest["seconds"][name]
    answers = [
        json.loads(x)["messages"][1]["content"] for x in (copy / "solver_data/solver_sft.jsonl").open()
    ]
    assert all(a.startswith("The answer is \\boxed{") for a in answers)
    assert not _same_weights(out / "solver_cold_start", copy / "solver_cold_start")
    # a constant-rate Solver SFT that also keeps its model at step 2 (N) beside the final one (2N = 4)
    snap = tmp_path / "snap"
    shutil.copytree(out, snap)
    build(snap, replace(TINY, solver_lr_schedule="constant", solver_snapshot_step=2))
    assert (snap / "solver_cold_start" / "step_2" / "config.json").is_file()
    assert not _same_weights(snap / "solver_cold_start" / "step_2", snap / "solver_cold_start")
    lrs = [
        r["lr"] for r in map(json.loads, (snap / "solver_cold_start" / "metrics.jsonl").open()) if "lr" in r
    ]
    assert lrs[-1] == lrs[-2] > 0  # constant after warm-up, not annealed to 0
    # --until stops after a stage; a stage left unfinished is built again from its start
    part = tmp_path / "part"
    assert set(build(part, TINY, until="tokenizer")["seconds"]) == {"data", "tokenizer"}
    assert not (part / "base").exists()
    (part / "base").mkdir()  # an interrupted stage: no .done marker
    (part / "base" / "partial.txt").write_text("x")
    build(part, TINY, until="base")
    assert not (part / "base" / "partial.txt").exists() and _same_weights(out / "base", part / "base")
    with pytest.raises(UserError, match="--until must be one of"):
        build(part, TINY, until="everything")


def test_build_settings_from_the_command_line(capsys):
    assert parse_setting("solver_examples=32000") == ("solver_examples", 32000)
    assert parse_setting("solver_direct_share=0.25") == ("solver_direct_share", 0.25)
    assert parse_setting("solver_lr_schedule=constant") == ("solver_lr_schedule", "constant")
    # the Solver's new settings (issue 23) move only the Solver stages' fingerprints
    plain = stage_fingerprints(BuildSettings())
    mix = stage_fingerprints(
        BuildSettings(solver_direct_min_operands=2, solver_lr_schedule="constant", solver_snapshot_step=990)
    )
    assert {k for k in plain if plain[k] != mix[k]} == {"solver_data", "solver_cold_start"}
    with pytest.raises(UserError, match="KEY one of heldout, validation"):
        parse_setting("solver_mix=0.5")
    with pytest.raises(UserError, match="needs an int; got '1e4'"):
        parse_setting("solver_examples=1e4")
    assert main(["toy", "build", "--out", "x", "--export", "--until", "base"]) == 1
    assert "--export ships the default build" in capsys.readouterr().err


def test_demo_writes_report_summary_plots_and_models(tiny_build, tmp_path, monkeypatch):
    out, _ = tiny_build
    monkeypatch.setenv("PASODOBLE_CACHE", str(tmp_path / "cache"))
    demo = tmp_path / "demo"
    argv = [
        "demo",
        "--out",
        str(demo),
        "--models",
        str(out),
        "--steps",
        "2",
        "--eval-limit",
        "8",
        "--seed",
        "3",
    ]
    assert (
        main(
            [
                *argv,
                "run.progress=false",
                "run.threads=1",  # torch's thread count is process-wide: keep the suite's 1
                "eval.every=1",
                "eval.limit=4",
                "rollout.max_new_tokens=24",
                "proposer.max_new_tokens=24",
                "solver.max_new_tokens=24",
            ]
        )
        == 0
    )
    summary = json.loads((demo / "summary.json").read_text())
    assert {"accuracy_before", "accuracy_after", "steps", "valid_question_rate", "wall_time_s"} <= set(
        summary
    )
    assert summary["steps"] == 2 and summary["seed"] == 3 and summary["ablation"] is None
    for name in ("accuracy.png", "valid_rate.png", "pass_rate.png", "proposer_reward.png", "diversity.png"):
        assert (demo / name).stat().st_size > 1000
    for name in ("solver_cold_start", "solver_final"):
        assert (demo / name / "config.json").is_file() and (demo / name / "tokenizer_config.json").is_file()
    report = (demo / "report.md").read_text()
    assert "cold-start Solver" in report and "accuracy.png" in report and "worked-style share" in report
    # every evaluation, sorted by answer style: all 8 problems at steps 0 and 2, the first 4 in between
    curve = [
        (p["step"], p["evaluated_on"], p["problems"], p["samples_per_problem"]) for p in summary["curve"]
    ]
    assert curve == [
        (0, "all", 8, 4),
        (0, "subset", 4, 4),
        (1, "subset", 4, 4),
        (2, "subset", 4, 4),
        (2, "all", 8, 4),
    ]
    rows = [json.loads(x) for x in (demo / "eval" / "final" / "samples.jsonl").read_text().splitlines()]
    styles = [answer_style(r["response"]) for r in rows]
    assert summary["worked_share_after"] == pytest.approx(styles.count("worked") / 32, abs=1e-4)
    assert summary["curve"][-1]["accuracy"] == pytest.approx(summary["accuracy_after"], abs=1e-4)
    results = json.loads((demo / "eval" / "final" / "results.json").read_text())
    assert results["average"]["pass@1"] == pytest.approx(summary["accuracy_after"], abs=1e-4)
    assert len((demo / "eval" / "final" / "samples.jsonl").read_text().splitlines()) == 8 * 4
    # 95% intervals (bootstrap over the 8 problems, paired for the gain), in the summary and the report
    from pasodoble.toy.intervals import demo_intervals

    before_rows = [
        json.loads(x) for x in (demo / "eval" / "cold_start" / "samples.jsonl").read_text().splitlines()
    ]
    intervals = demo_intervals(before_rows, rows)
    assert summary["accuracy_before_ci"] == intervals["accuracy_before"]
    assert summary["accuracy_after_ci"] == intervals["accuracy_after"]
    assert summary["gain_points_ci"] == intervals["gain_points"]
    lo, hi = summary["accuracy_after_ci"]
    assert lo <= summary["accuracy_after"] <= hi
    assert summary["interval"]["problems"] == 8 and summary["interval"]["wide"]
    assert "95% interval" in report and "so the interval is wide" in report
    assert all(len(p["accuracy_ci"]) == 2 for p in summary["curve"])
    run_cfg = (demo / "run" / "config.yaml").read_text()
    assert "solver_reward: verify" in run_cfg and "open_thinking: false" in run_cfg
    # a second demo into the same directory needs --overwrite
    assert main(argv) == 1


def test_demo_refuses_a_non_empty_directory_without_overwrite(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "file.txt").write_text("keep me")
    assert main(["demo", "--out", str(tmp_path / "x"), "--models", str(tmp_path)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "x" / "file.txt").read_text() == "keep me"


def test_demo_config_ablation_and_overrides(tmp_path):
    from pasodoble.toy.demo import demo_config

    args = (tmp_path, 5, tmp_path / "m", tmp_path / "k.jsonl", tmp_path / "h.jsonl", 7)
    plain = demo_config(*args, None, [])
    assert plain.rewards.solver_reward == "verify" and plain.run.max_steps == 7 and plain.run.seed == 5
    assert plain.proposer.model_path.endswith("proposer_cold_start")
    assert plain.solver.model_path.endswith("solver_cold_start")
    assert plain.knowledge.source.endswith("k.jsonl") and plain.eval.benchmarks == [str(tmp_path / "h.jsonl")]
    coin = demo_config(*args, "random-reward", ["solver.learning_rate=3e-5"])
    assert coin.rewards.solver_reward == "random" and coin.solver.learning_rate == 3e-5
    partial = demo_config(*args, "partial-random-reward", [])
    assert partial.rewards.solver_reward == "partial-random"


def test_demo_generation_caps_fit_the_cold_start_answers():
    """Each role's cap holds the longest answer its cold start taught it (+ end of turn).

    At the earlier Proposer cap of 192 tokens, 28% of the shipped Proposer's proposals were cut before
    their boxed answer and counted invalid (its SFT answers run to 221 tokens).
    """
    from pasodoble.models import load_tokenizer
    from pasodoble.toy.build import ASSETS
    from pasodoble.toy.cold_start import proposer_examples, solver_examples
    from pasodoble.toy.corpus import build_corpus
    from pasodoble.toy.demo import DEMO_CONFIG

    tok = load_tokenizer(str(ASSETS / "proposer_cold_start"))
    corpus = build_corpus(3000, 0, exclude=set())
    for role, examples in (
        ("proposer", proposer_examples(corpus, 1000, 0, exclude=set())),
        ("solver", solver_examples(1000, 0, exclude=set())),
    ):
        longest = max(
            len(tok(e["messages"][-1]["content"], add_special_tokens=False).input_ids) + 1 for e in examples
        )
        assert longest <= DEMO_CONFIG[role]["max_new_tokens"], (role, longest)


def test_demo_threads(tmp_path, monkeypatch):
    import os

    from pasodoble.toy import demo

    args = (tmp_path, 0, tmp_path / "m", tmp_path / "k.jsonl", tmp_path / "h.jsonl", 7, None)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert demo.demo_threads() == 2 and demo.demo_config(*args, []).run.threads == 2
    assert demo.demo_config(*args, ["run.threads=1"]).run.threads == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert demo.demo_threads() == 1


def test_rl_probe_runs_side_by_side_from_one_model(tiny_build, tmp_path, monkeypatch):
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "toy_rl_probe.py"
    spec = importlib.util.spec_from_file_location("toy_rl_probe", path)
    probe = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "toy_rl_probe", probe)  # dataclasses resolve annotations there
    spec.loader.exec_module(probe)
    out, _ = tiny_build
    argv = ["--model", str(out / "solver_cold_start"), "--steps", "2", "--eval-every", "1"]
    argv += ["--eval-problems", "4", "--eval-samples", "1", "--max-new-tokens", "16", "--out", str(tmp_path)]
    argv += ["--run", "a:lr=1e-5,questions=2,samples=2", "--run", "b:mode=sft,lr=1e-4,questions=2"]
    assert probe.main(argv) == 0
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    assert [r["run"]["name"] for r in results] == ["a", "b"]
    assert all([p["step"] for p in r["curve"]] == [0, 1, 2] for r in results)
    # both runs start from the same model and evaluation: same step-0 accuracy
    assert results[0]["curve"][0] == results[1]["curve"][0]
    assert "| a |" in (tmp_path / "results.md").read_text()
    with pytest.raises(SystemExit, match="unknown setting"):
        probe.parse_run("x:learning_rate=1")
    with pytest.raises(SystemExit, match="needs a float"):
        probe.parse_run("x:lr=fast")


def test_paper_in_miniature_runs_every_variant_and_writes_the_table(tiny_build, tmp_path, monkeypatch):
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "paper_in_miniature.py"
    spec = importlib.util.spec_from_file_location("paper_in_miniature", path)
    paper = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "paper_in_miniature", paper)
    spec.loader.exec_module(paper)
    out, _ = tiny_build
    monkeypatch.setenv("PASODOBLE_CACHE", str(tmp_path / "cache"))
    paper_out = tmp_path / "paper"
    argv = [
        "--out",
        str(paper_out),
        "--models",
        str(out),
        "--seeds",
        "0",
        "--steps",
        "5",
        "--eval-limit",
        "6",
    ]
    argv += ["--jobs", "2", "run.progress=false", "eval.limit=3", "eval.every=5"]
    argv += ["rollout.max_new_tokens=24", "proposer.max_new_tokens=24", "solver.max_new_tokens=24"]
    assert paper.main(argv) == 0, [p.read_text()[-2000:] for p in paper_out.glob("*.log")]
    results = json.loads((paper_out / "results.json").read_text())
    runs = results["runs"]
    assert set(runs) == {f"{v}-seed0" for v in paper.VARIANTS}
    # the variants differ only as documented
    cfg = {v: (paper_out / f"{v}-seed0" / "run" / "config.yaml").read_text() for v in paper.VARIANTS}
    assert "solver_reward: partial-random" in cfg["partial-random-reward"]
    assert "solver_reward: random" in cfg["random-reward"]
    assert "mode: offline" in cfg["offline"] and "updates_per_phase: 5" in cfg["offline"]
    assert "enabled: false" in cfg["no-knowledge"]
    # every variant of a seed starts from the same cold-start evaluation (the dual-play run's, reused)
    assert len({r["accuracy_before"] for r in runs.values()}) == 1
    # (with 2 jobs the offline run starts beside the dual-play run and evaluates the cold start itself)
    reused = {name for name, r in runs.items() if r["cold_start_eval_reused"]}
    assert reused == {f"{v}-seed0" for v in paper.VARIANTS[2:]}
    # offline: one phase of 5 Proposer and 5 Solver steps, at most 5 Solver updates like the 5 online steps
    assert runs["offline-seed0"]["steps"] == 10 and runs["dual-play-seed0"]["steps"] == 5
    assert runs["offline-seed0"]["solver_updates"] <= 5 and runs["dual-play-seed0"]["solver_updates"] <= 5
    assert set(results["memorization"]) == {"dual-play-seed0", "no-knowledge-seed0"}
    prefixes = [p["prefix"] for p in results["memorization"]["dual-play-seed0"]]
    assert prefixes == [0.2, 0.4, 0.6, 0.8]
    table = (paper_out / "results.md").read_text()
    assert "| partial-random-reward |" in table and "exact match, with knowledge" in table
