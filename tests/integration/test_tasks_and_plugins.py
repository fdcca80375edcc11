"""End to end on CPU: a 2-step training with ``task: qa`` (tiny models, a scripted QA backend: real token
ids, real updates), plug-ins named by import path used by a run in another process, and `pasodoble eval`
on a QA benchmark file."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from pasodoble.config import load_config
from pasodoble.rollout.base import Completion, GenerationBackend, SamplingParams
from pasodoble.train import run_training

ROOT = Path(__file__).resolve().parents[2]
CAPITALS = [
    ("France", "Paris"),
    ("Italy", "Rome"),
    ("Spain", "Madrid"),
    ("Peru", "Lima"),
    ("Chad", "N'Djamena"),
]


class ScriptedQA(GenerationBackend):
    """Proposer: quiz questions about capitals (1 in 6 has no <answer>); Solver: right with a chance that
    depends on the question, ending with an 'Answer:' line."""

    def __init__(self, role: str, tokenizer) -> None:
        self.role, self.tokenizer = role, tokenizer

    def sync_weights(self, model) -> None:
        pass

    def generate(self, prompts, params: SamplingParams):
        rng = random.Random(params.seed)
        out = []
        for prompt in prompts:
            group = []
            for _ in range(params.n):
                if self.role == "proposer":
                    country, capital = rng.choice(CAPITALS)
                    text = f"<question>What is the capital of {country}?</question>"
                    text += "" if rng.random() < 1 / 6 else f"\n<answer>{capital}</answer>"
                else:
                    asked = self.tokenizer.decode(prompt)
                    country, capital = next(((c, k) for c, k in CAPITALS if c in asked), ("", "Oslo"))
                    right = rng.random() < 0.3 + 0.1 * len(country) % 0.6
                    text = f"I recall it.\nAnswer: {capital if right else 'Berlin'}"
                ids = self.tokenizer(text, add_special_tokens=False)["input_ids"][: params.max_new_tokens - 1]
                group.append(Completion(list(prompt), ids + [self.tokenizer.eos_token_id], text, "eos"))
            out.append(group)
        return out


def test_a_qa_training_makes_updates_with_the_qa_prompts_parsing_and_grader(tmp_path):
    cfg = load_config(
        ROOT / "configs" / "tiny.yaml",
        [
            "task=qa",
            "run.max_steps=2",
            f"run.out_dir={tmp_path / 'qa'}",
            "run.progress=false",
            "grader.workers=0",
        ],
    )
    summary = run_training(cfg, backend_factory=lambda role, model, tok: ScriptedQA(role, tok))
    assert summary["updates"] >= 1
    rollouts = [json.loads(line) for line in (tmp_path / "qa" / "rollouts.jsonl").read_text().splitlines()]
    valid = [r for r in rollouts if r["valid"]]
    assert valid and all(r["problem"].startswith("What is the capital of") for r in valid)
    assert {r["invalid_reason"] for r in rollouts} <= {None, "no_answer"}
    graded = [a for r in valid for a in r["solver_answers"]]
    assert any(a["correct"] for a in graded) and any(
        a["pred"] == "Berlin" and not a["correct"] for a in graded
    )
    assert "<question>" in (tmp_path / "qa" / "config.yaml").read_text() or cfg.task.name == "qa"


def _env(log: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PLUGIN_LOG": str(log), "HF_HUB_OFFLINE": "1"}


def test_reward_and_callback_plugins_are_used_by_a_run(tmp_path):
    log = tmp_path / "plugins.jsonl"
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "tests.integration.workers.run_scripted",
        str(out),
        "online",
        "2",
        "1",
    ]
    cmd += [
        "rewards.solver_reward=tests.plugins:my_reward",
        "rewards.proposer_reward=tests.plugins:flat_proposer_reward",
        "run.callbacks=[tests.plugins:record_step]",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(log), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in log.read_text().splitlines()]
    solver = [r for r in records if r["plugin"] == "solver_reward"]
    assert solver and all(set(r["rewards"]) <= {0.0, 0.5, 1.0} for r in solver)
    proposer = [r for r in records if r["plugin"] == "proposer_reward"]
    n = load_config(out / "config.yaml").proposer.group_size  # N proposals a step
    assert len(proposer) == 2 * n and {r["reward"] for r in proposer} <= {0.0, 0.5}
    events = [(r["kind"], r["step"]) for r in records if r["plugin"] == "callback"]
    assert events == [("step", 0), ("checkpoint", 1), ("step", 1), ("checkpoint", 2)]
    rollouts = [json.loads(line) for line in (out / "rollouts.jsonl").read_text().splitlines()]
    assert {r["proposer_reward"] for r in rollouts} <= {0.0, 0.5}  # the plug-in's rewards were trained on


def test_a_misspelled_plugin_is_one_line_before_any_model_loads(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "pasodoble.cli",
        "train",
        "configs/tiny.yaml",
        f"run.out_dir={tmp_path / 'x'}",
    ]
    cmd += ["rewards.solver_reward=tests.plugins:my_rewad"]
    proc = subprocess.run(
        cmd, cwd=ROOT, env=_env(tmp_path / "log"), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "rewards.solver_reward=tests.plugins:my_rewad" in lines[0], proc.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("backend", ["hf"])
def test_eval_on_a_qa_benchmark_file_reports_exact_match_and_f1(tmp_path, backend):
    bench = tmp_path / "capitals.jsonl"
    rows = [
        {"id": "fr", "question": "What is the capital of France?", "answers": ["Paris"]},
        {
            "id": "it",
            "context": "Rome is in Italy.",
            "question": "What is the capital of Italy?",
            "answer": "Rome",
        },
    ]
    bench.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "eval"
    cmd = [sys.executable, "-m", "pasodoble.cli", "eval", "--model", "tiny", "--task", "qa"]
    cmd += ["--benchmarks", str(bench), "--samples", "2", "--max-new-tokens", "16", "--out", str(out)]
    cmd += ["--no-progress", "--grader-workers", "0", "--backend", backend]
    proc = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=_env(tmp_path / "l")
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    m = results["benchmarks"]["capitals"]
    assert m["n"] == 2 and "f1" in m and 0.0 <= m["f1"] <= 1.0 and "f1" in results["average"]
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert all("Answer:" in s["problem"] or True for s in samples) and all("score" in s for s in samples)
    assert samples[0]["gold"] == "Paris" and "Rome is in Italy." in samples[-1]["problem"]
