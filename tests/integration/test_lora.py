"""LoRA (model.lora.*): the adapters train and the base does not; checkpoints hold the adapters only;
generation engines and exported models get merged weights under the base names; a LoRA run resumes
bit for bit after a kill; refused layouts are one-line errors."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pasodoble import lora
from pasodoble.cli import main
from pasodoble.config import ConfigError, GRPOConfig, LoRAConfig, RoleConfig, load_config
from pasodoble.learner import Learner, TrainSample
from pasodoble.parallel import Parallelism
from pasodoble.rollout.base import SamplingParams
from pasodoble.testing.tiny import build_tiny_model, build_tiny_tokenizer, tiny_task_prompts
from pasodoble.weights import full_state_items

ROOT = Path(__file__).resolve().parents[2]
TOY = ROOT / "src" / "pasodoble" / "assets" / "toy"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
LORA = LoRAConfig(roles=["solver"], rank=4, alpha=8.0)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _batch(tok, n: int, seed: int) -> list[TrainSample]:
    """``n`` samples of random 1-8 token completions with group-centred advantages (groups of 4)."""
    g = torch.Generator().manual_seed(seed)
    prompts = tiny_task_prompts(tok, 4)
    adv = torch.randn(n, generator=g).view(-1, 4)
    adv = (adv - adv.mean(1, keepdim=True)).flatten().tolist()
    out = []
    for i in range(n):
        length = int(torch.randint(1, 9, (1,), generator=g))
        out.append(
            TrainSample(prompts[i % 4], torch.randint(3, len(tok), (length,), generator=g).tolist(), adv[i])
        )
    return out


def _learner(tok, model, **kw) -> Learner:
    role = RoleConfig(learning_rate=1e-2, micro_batch_size=8)
    return Learner(
        "solver", model, tok, role, GRPOConfig(loss_type="dapo"), temperature=1.0, max_new_tokens=8, **kw
    )


def test_lora_config_fields_are_checked():
    cfg = load_config(None, ["model.lora.roles=solver,proposer", "model.lora.target_modules=q_proj,v_proj"])
    assert cfg.model.lora.roles == ["solver", "proposer"] and cfg.model.lora.target_modules == [
        "q_proj",
        "v_proj",
    ]
    for override, needle in [
        ("model.lora.roles=[critic]", "model.lora.roles entries must be proposer or solver"),
        ("model.lora.rank=0", "model.lora.rank must be >= 1"),
        ("model.lora.alpha=0", "model.lora.alpha must be > 0"),
        ("model.lora.dropout=1.0", "model.lora.dropout must be in [0, 1)"),
        ("model.lora.target_modules=[]", "model.lora.target_modules must name"),
    ]:
        with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace(")", r"\)")):
            load_config(None, [override])
    with pytest.raises(ConfigError, match="vllm.mode=trl_server"):
        load_config(None, ["model.lora.roles=[solver]", "rollout.backend=vllm", "vllm.mode=trl_server"])
    assert lora.peft_config(LoRAConfig()).target_modules == "all-linear"


def test_the_learner_trains_the_adapters_and_saves_only_them(tmp_path):
    tok = build_tiny_tokenizer()
    plain = build_tiny_model(tok, seed=0)
    initial = {k: v.clone() for k, v in plain.state_dict().items()}
    torch.manual_seed(0)
    learner = _learner(tok, lora.wrap(plain, LORA))
    # AdamW holds the adapters only: r (d_in + d_out) for the 7 linear layers of each of the 4 blocks, r = 4:
    # q, o 128 -> 128; k, v 128 -> 64 (2 KV heads); gate, up 128 -> 384; down 384 -> 128
    n_trained = sum(p.numel() for g in learner.optimizer.param_groups for p in g["params"])
    assert n_trained == 4 * 4 * (2 * (128 + 128) + 2 * (128 + 64) + 3 * (128 + 384))  # = 38,912 of 0.9 M
    for u in range(3):
        learner.update(_batch(tok, 16, seed=u))
    # the base did not move; the adapters did (B starts at zero); the merged model differs from the base
    inner = learner.unwrapped_model.state_dict()
    for name, before in initial.items():
        key = name.replace("_proj.weight", "_proj.base_layer.weight")
        assert torch.equal(inner[key], before), name
    adapters = lora.adapter_state_dict(learner.peft_model)
    assert len(adapters) == 2 * 7 * 4
    assert all(torch.count_nonzero(v) > 0 for k, v in adapters.items() if "lora_B" in k)
    merged = learner.full_state_dict()
    assert list(merged) == list(initial)  # base names, base order, no adapter tensors
    assert sum(not torch.equal(merged[k], initial[k]) for k in initial) == 28  # exactly the adapted weights
    # equal to peft's own merge (merge_and_unload), bit for bit
    reference = lora.merged_model(copy.deepcopy(learner.peft_model)).state_dict()
    assert all(torch.equal(reference[k], merged[k]) for k in merged)
    # save_pretrained: a plain Hugging Face model with the merged weights
    from transformers import AutoModelForCausalLM

    learner.save_pretrained(tmp_path / "hf")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").state_dict()
    assert all(torch.equal(loaded[k], merged[k]) for k in merged)
    # the checkpoint holds the adapters and their AdamW moments, nothing of the base
    learner.save(tmp_path)
    state = torch.load(tmp_path / "solver.pt", map_location="cpu", weights_only=True)
    assert state["lora"] is True and set(state["model"]) == set(adapters)
    assert len(state["optimizer"]["state"]) == len(adapters)
    assert (tmp_path / "solver.pt").stat().st_size < 0.2 * 4 * sum(v.numel() for v in initial.values())


def test_a_lora_learner_resumes_bit_for_bit_and_refuses_other_checkpoints(tmp_path):
    tok = build_tiny_tokenizer()
    torch.manual_seed(0)
    a = _learner(tok, lora.wrap(build_tiny_model(tok, seed=0), LORA))
    a.update(_batch(tok, 16, seed=0))
    a.save(tmp_path)
    a.update(_batch(tok, 16, seed=1))
    torch.manual_seed(99)  # other adapter initialization: everything must come from the checkpoint
    b = _learner(tok, lora.wrap(build_tiny_model(tok, seed=0), LORA))
    b.load(tmp_path)
    b.update(_batch(tok, 16, seed=1))
    wa, wb = a.full_state_dict(), b.full_state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    full = _learner(tok, build_tiny_model(tok, seed=0))
    with pytest.raises(ValueError, match="holds LoRA adapters and this run trains full weights"):
        full.load(tmp_path)
    other = _learner(
        tok, lora.wrap(build_tiny_model(tok, seed=0), LoRAConfig(rank=4, target_modules=["q_proj"]))
    )
    with pytest.raises(ValueError, match="do not fit this model"):
        other.load(tmp_path)


def test_activation_checkpointing_with_adapters_gives_the_same_update():
    tok = build_tiny_tokenizer()
    learners = []
    for checkpointing in (True, False):
        torch.manual_seed(0)
        model = lora.wrap(build_tiny_model(tok, seed=0), LORA)
        learners.append(_learner(tok, model, gradient_checkpointing=checkpointing))
    m = [x.update(_batch(tok, 16, seed=0)) for x in learners]
    assert m[0]["grad_norm"] == m[1]["grad_norm"] > 0
    wa, wb = (x.full_state_dict() for x in learners)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_engines_get_merged_weights_under_the_base_names():
    from pasodoble.rollout.hf import HFBackend
    from pasodoble.rollout.hf_batched import HFBatchedBackend, release_replicas

    tok = build_tiny_tokenizer()
    torch.manual_seed(0)
    learner = _learner(tok, lora.wrap(build_tiny_model(tok, seed=0), LORA))
    learner.update(_batch(tok, 16, seed=0))
    adapted = learner.unwrapped_model
    merged = build_tiny_model(tok, seed=1)
    merged.load_state_dict(dict(full_state_items(adapted)))
    plain_names = list(merged.state_dict())
    assert [n for n, _ in full_state_items(adapted)] == plain_names
    # skip_tied leaves out the tied output head, as for a plain model
    assert [n for n, _ in full_state_items(adapted, skip_tied=True)] == [
        n for n, _ in full_state_items(merged, skip_tied=True)
    ]
    prompts = tiny_task_prompts(tok, 3)
    params = SamplingParams(temperature=1.0, max_new_tokens=12, n=2, seed=5)
    # The hf_batched replica (bf16 copy fed by full_state_items) of the adapted model decodes exactly
    # like the replica of the merged model: same weights in, same tokens out.
    try:
        kw = {"compute_dtype": torch.bfloat16, "replica": True}
        a = HFBatchedBackend(adapted, tok, **kw).generate(prompts, params)
        b = HFBatchedBackend(merged, tok, **kw).generate(prompts, params)
    finally:
        release_replicas()
    assert [[c.completion_ids for c in g] for g in a] == [[c.completion_ids for c in g] for g in b]
    # The transformers backend generates through the adapted model (x W + (x A) B scale, not merged):
    # the same tokens, log-probabilities within float32 rounding
    greedy = SamplingParams(temperature=1.0, top_k=1, max_new_tokens=12, n=1, seed=0, return_logprobs=True)
    a = HFBackend(adapted, tok).generate(prompts, greedy)
    b = HFBackend(merged, tok).generate(prompts, greedy)
    assert [g[0].completion_ids for g in a] == [g[0].completion_ids for g in b]
    diff = max(
        abs(x - y)
        for ga, gb in zip(a, b, strict=True)
        for x, y in zip(ga[0].logprobs, gb[0].logprobs, strict=True)
    )
    assert diff < 1e-4


def test_sharded_layouts_refuse_lora_naming_the_fix():
    tok = build_tiny_tokenizer()
    for strategy in ("fsdp2", "deepspeed_zero2"):
        par = Parallelism(strategy, torch.float32, 2)
        with pytest.raises(
            ConfigError, match=f"distributed.strategy={strategy} .*set distributed.strategy=ddp"
        ):
            _learner(tok, lora.wrap(build_tiny_model(tok, seed=0), LORA), parallelism=par)


def _run(out: Path, steps: int, every: int, *extra: str) -> subprocess.CompletedProcess:
    worker = "tests.integration.workers.run_scripted"  # run with -m from ROOT
    cmd = [sys.executable, "-m", worker, str(out), "online", str(steps), str(every), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600, cwd=ROOT)


@pytest.mark.slow
def test_a_lora_run_on_the_toy_models_trains_the_adapters_and_resumes_bitwise(tmp_path):
    toy = [
        f"model.name_or_path={TOY / 'base'}",
        f"proposer.model_path={TOY / 'proposer_cold_start'}",
        f"solver.model_path={TOY / 'solver_cold_start'}",
        "model.lora.roles=[proposer,solver]",
        "model.lora.rank=4",
        "rollout.max_new_tokens=48",
    ]
    full, killed = tmp_path / "full", tmp_path / "killed"
    done = _run(full, 6, 3, *toy)
    assert done.returncode == 0, done.stderr[-3000:]
    crashed = _run(killed, 6, 3, "--kill-at-step", "4", *toy)
    assert crashed.returncode == -9, crashed.stderr[-3000:]
    resumed = _run(killed, 6, 3, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    assert sum("solver/loss" in m for m in metrics) >= 3 and sum("proposer/loss" in m for m in metrics) >= 3
    for role in ("proposer", "solver"):
        a = load_file(full / f"{role}_final" / "model.safetensors")
        b = load_file(killed / f"{role}_final" / "model.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), (
            f"{role} differs after resume"
        )
        # the checkpoint holds adapters that moved (B starts at zero) and nothing of the base
        state = torch.load(full / "checkpoints" / "step_00000006" / f"{role}.pt", weights_only=True)
        assert state["lora"] is True and all(".lora_" in k for k in state["model"])
        assert all(torch.count_nonzero(v) > 0 for k, v in state["model"].items() if "lora_B" in k)
        # The base did not move: the shipped starting model plus the saved adapters (what export merges)
        # is bit for bit the trained model the run wrote.
        out = tmp_path / f"{role}-export"
        assert (
            main(["export", str(full / "checkpoints" / "step_00000006"), "--role", role, "--out", str(out)])
            == 0
        )
        exported = load_file(out / "model.safetensors")
        assert all(torch.equal(exported[k], a[k]) for k in a)
        start = load_file(TOY / f"{role}_cold_start" / "model.safetensors")
        assert any(not torch.equal(a[k].to(start[k].dtype), start[k]) for k in start)
    strip = lambda lines: [{k: v for k, v in m.items() if not k.startswith("time/")} for m in lines]  # noqa: E731
    again = [json.loads(x) for x in (killed / "metrics.jsonl").read_text().splitlines()]
    assert strip(metrics) == strip(again)


def test_a_lora_run_with_the_transformers_backend_and_eval_of_its_checkpoint(tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "pasodoble.cli", "train", str(ROOT / "configs" / "tiny.yaml"), f"run.out_dir={out}",
        "run.max_steps=2", "run.checkpoint_every=1", "run.progress=false", "model.lora.roles=[solver]",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = torch.load(out / "checkpoints" / "step_00000001" / "solver.pt", weights_only=True)
    assert state["lora"] is True
    assert "lora" not in torch.load(out / "checkpoints" / "step_00000001" / "proposer.pt", weights_only=True)
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"id": "a", "problem": "What is 2 + 3?", "answer": "5"}) + "\n")
    args = ["eval", "--model", str(out / "checkpoints" / "step_00000001"), "--role", "solver"]
    args += ["--benchmarks", str(bench), "--samples", "1", "--max-new-tokens", "4", "--grader-workers", "0"]
    assert main([*args, "--no-progress", "--out", str(tmp_path / "eval")]) == 0


@pytest.mark.slow
def test_lora_under_ddp_equals_one_process(tmp_path):
    """2 DDP processes (gloo) against one, float64, same global batches: the gradient all-reduce covers
    the adapters (the only parameters that require gradients) and nothing else."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    worker = "tests.integration.workers.lora_ddp_worker"  # run with -m from ROOT
    one, two = tmp_path / "one.pt", tmp_path / "two.pt"
    runs = [
        [sys.executable, "-m", worker, str(one)],
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(port), "-m", worker, str(two)],
    ]  # fmt: skip
    for cmd in runs:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = torch.load(one, weights_only=True), torch.load(two, weights_only=True)
    assert (a["world"], b["world"]) == (1, 2)
    assert max(v.abs().max().item() for k, v in a["adapters"].items() if "lora_B" in k) > 1e-2  # trained
    assert max((a["merged"][k] - b["merged"][k]).abs().max().item() for k in a["merged"]) < 1e-12
    for ma, mb in zip(a["metrics"], b["metrics"], strict=True):
        assert ma["sequences"] == mb["sequences"] == 24
        assert ma["loss"] == pytest.approx(mb["loss"], abs=1e-12)
        assert ma["grad_norm"] == pytest.approx(mb["grad_norm"], rel=1e-12)
