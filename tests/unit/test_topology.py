"""Placement, batch-size and memory validation (pasodoble.topology); numbers derived by hand in comments."""

from __future__ import annotations

from pathlib import Path

import pytest

from pasodoble.config import ConfigError, load_config
from pasodoble.topology import (
    KNOWN_ARCHITECTURES,
    Architecture,
    accelerator_kwargs,
    activation_bytes,
    count_parameters,
    kv_cache_bytes,
    learner_state_bytes,
    resolve_architecture,
    step_time_estimate,
    validate_topology,
)

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny.yaml"
RECIPES = sorted((ROOT / "configs" / "recipes").glob("*.yaml"))

# vocab 1000, hidden 64, 2 layers, 4 heads / 2 KV heads of 16, MLP 128, tied embeddings
SMALL = Architecture(1000, 64, 2, 4, 2, 16, 128, True)


def gpu_cfg(*overrides: str):
    return load_config(TINY, ["run.device=cuda", *overrides])


def test_parameter_count_by_hand():
    # attention: q 64x64 + k,v 2 x 64x32 + o 64x64 = 4096 + 4096 + 4096 = 12288
    # MLP: 3 x 64 x 128 = 24576; two RMSNorms 2 x 64 = 128 -> 36992 per layer
    # embeddings 1000 x 64 = 64000 (tied: no separate head); final norm 64
    # total = 64000 + 2 x 36992 + 64 = 138048
    assert count_parameters(SMALL) == 138048


def test_parameter_count_matches_real_models(tiny_model):
    a = resolve_architecture(load_config(TINY))
    assert count_parameters(a) == sum(p.numel() for p in tiny_model.parameters())
    # published sizes: Qwen3-1.7B 1.7 B (1.4 B without embeddings), Qwen2.5-3B 3.09 B
    assert count_parameters(KNOWN_ARCHITECTURES["Qwen/Qwen3-1.7B-Base"]) == pytest.approx(1.72e9, rel=0.01)
    assert count_parameters(KNOWN_ARCHITECTURES["Qwen/Qwen2.5-3B"]) == pytest.approx(3.09e9, rel=0.01)


def test_learner_state_bytes_by_hand():
    P = 10**9
    # fsdp2, bf16, 4 processes: weights 2P/4, grads 2P/4, AdamW moments 2 x 2P / 4
    assert learner_state_bytes(P, "bfloat16", "fsdp2", 4) == {
        "weights": 5e8,
        "gradients": 5e8,
        "optimizer": 1e9,
    }
    # ZeRO-2, bf16, 4 processes: weights replicated 2P; grads 2P/4; fp32 master 4P + moments 8P, / 4
    assert learner_state_bytes(P, "bfloat16", "deepspeed_zero2", 4) == {
        "weights": 2e9,
        "gradients": 5e8,
        "optimizer": 3e9,
    }
    # DDP, fp32: 4P + 4P + 8P, nothing sharded
    assert learner_state_bytes(P, "float32", "ddp", 8) == {"weights": 4e9, "gradients": 4e9, "optimizer": 8e9}
    # ZeRO-3 shards everything: (2P + 2P + 12P) / 8 = 2e9 in total
    assert sum(learner_state_bytes(P, "bfloat16", "deepspeed_zero3", 8).values()) == 2e9


def test_activation_and_kv_bytes_by_hand():
    cfg = load_config(
        TINY,
        [
            "model.dtype=bfloat16",
            "solver.micro_batch_size=2",
            "rollout.max_prompt_tokens=10",
            "rollout.max_new_tokens=6",
        ],
    )
    out = activation_bytes(SMALL, cfg, "solver")
    # s = 10 + 6 = 16 tokens; 34 h L s mb b/2 = 34 x 64 x 2 x 16 x 2 x 1 = 139264
    assert out["activations"] == 139264
    # logits + grad: 2 x mb 2 x (T+1) 7 x V 1000 x 2 B = 56000; fp32 chunk 2 x 2 x 7 x 1000 x 4 = 112000
    assert out["logits"] == 168000
    cfg.model.gradient_checkpointing = True
    # 2 h L s mb b/2 = 2 x 64 x 2 x 16 x 2 = 8192; plus one layer 34 h s mb = 34 x 64 x 16 x 2 = 69632
    assert activation_bytes(SMALL, cfg, "solver")["activations"] == 8192 + 69632
    # KV per token: 2 (K,V) x 2 layers x 2 heads x 16 = 128 elements; 100 tokens in bf16 = 25600 B
    assert kv_cache_bytes(SMALL, 100, "bfloat16") == 25600


def test_tiny_config_passes_on_cpu_and_declared_gpu():
    plan = validate_topology(load_config(TINY))  # this machine: no GPU
    assert plan.hardware.cpu
    plan = validate_topology(gpu_cfg(), num_gpus=1, gpu_memory_gib=16)
    assert plan.num_parameters == 903808 and plan.memory[0].total < 1 * 2**30


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipes_validate_on_8x80gb(recipe):
    cfg = load_config(recipe)
    assert (cfg.proposer.group_size, cfg.solver.group_size, cfg.rollout.temperature) == (6, 6, 0.6)
    assert cfg.rollout.max_new_tokens == 6144 and cfg.grpo.loss_type == "dr_grpo" and cfg.grpo.beta == 0
    assert cfg.run.max_steps == (2000 if cfg.run.mode == "online" else 200)
    plan = validate_topology(cfg, num_gpus=8, gpu_memory_gib=80)
    assert plan.placement.learner_processes == 6
    assert "GPUs:" in recipe.read_text().split("model:")[0]  # the header states the hardware


def test_twelve_recipes():
    names = {p.stem for p in RECIPES}
    for m in ("qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-3b"):
        assert {f"{m}-online", f"{m}-offline"} <= names


def refused(cfg, needle: str, **kw):
    with pytest.raises(ConfigError) as err:
        validate_topology(cfg, **kw)
    assert needle in str(err.value), str(err.value)
    return str(err.value)


def test_refuses_vllm_on_cpu():
    refused(load_config(TINY, ["rollout.backend=vllm"]), "rollout.backend=vllm needs CUDA GPUs")


def test_refuses_device_id_out_of_range():
    msg = refused(gpu_cfg("distributed.learner_devices=[0,8]"), "lists GPU 8, but a node has 8", num_gpus=8)
    assert "distributed.learner_devices" in msg


def test_refuses_overlapping_engine_and_learner_gpus():
    cfg = gpu_cfg(
        "rollout.backend=vllm",
        "vllm.mode=server",
        "vllm.proposer_url=http://a:1",
        "vllm.solver_url=http://a:2",
        "distributed.proposer_engine_devices=[0]",
        "distributed.solver_engine_devices=[1]",
        "distributed.learner_devices=[1,2]",
    )
    refused(cfg, "GPU 1 is both a learner device and a server-mode engine device", num_gpus=4)
    cfg.distributed.learner_devices = []
    cfg.distributed.solver_engine_devices = [0]
    refused(cfg, "in both distributed.proposer_engine_devices and solver_engine_devices", num_gpus=4)


def test_refuses_engine_devices_without_server_mode():
    refused(gpu_cfg("distributed.proposer_engine_devices=[0]"), "Clear them", num_gpus=2)


def test_refuses_server_mode_without_url():
    refused(gpu_cfg("rollout.backend=vllm", "vllm.mode=server"), "needs vllm.proposer_url", num_gpus=2)


def test_refuses_batch_not_divisible_by_processes():
    # proposer.group_size 4 over 3 learner processes
    refused(gpu_cfg(), "proposer.group_size (N: the Proposer's batch) = 4 is not divisible by 3", num_gpus=3)
    # offline Solver batch = 2 questions x 4 attempts = 8 over 3 processes (the Proposer's 6 splits)
    cfg = gpu_cfg("run.mode=offline", "proposer.group_size=6")
    refused(cfg, "solver.batch_questions x solver.group_size = 8 is not divisible by 3", num_gpus=3)
    # and into whole GRPO groups: 3 questions cannot split over 2 optimizer steps
    refused(
        gpu_cfg("run.mode=offline", "solver.batch_questions=3", "solver.steps_per_batch=2"),
        "does not divide solver.batch_questions=3",
        num_gpus=1,
    )


def test_refuses_more_solver_processes_than_one_group_can_feed():
    # one trainable question gives M = 4 Solver samples: 6 processes x 1 step each cannot all train
    cfg = gpu_cfg("proposer.group_size=6", "solver.group_size=4")
    refused(cfg, "solver.group_size=4 is smaller than 6 learner process(es)", num_gpus=6)


def test_refuses_world_size_that_does_not_match_learner_devices():
    refused(
        gpu_cfg("distributed.learner_devices=[0,1]"),
        "2 training process(es) were launched" if False else "4 training process(es) were launched",
        num_gpus=2,
        world_size=4,
    )


def test_refuses_model_that_does_not_fit():
    # Qwen3-4B (4.02e9 params), bf16, DDP on one 24 GiB GPU: 2 roles x 8 B/param x 4.02e9 = 64 GB alone
    cfg = gpu_cfg("model.name_or_path=Qwen/Qwen3-4B-Base", "model.dtype=bfloat16", "distributed.strategy=ddp")
    msg = refused(cfg, "the memory model says this does not fit", num_gpus=1, gpu_memory_gib=24)
    assert "micro_batch_size" in msg and "fsdp2" in msg
    # model.num_parameters overrides the count: a 1e6-parameter model fits
    cfg.model.num_parameters = 10**6
    validate_topology(cfg, num_gpus=1, gpu_memory_gib=24)
    # check_memory=false only warns
    cfg.model.num_parameters = None
    cfg.distributed.check_memory = False
    validate_topology(cfg, num_gpus=1, gpu_memory_gib=24)


def test_refuses_engine_that_cannot_hold_weights():
    # Qwen3-4B in bf16 = 8.0 GB of weights > 0.05 x 80 GiB = 4 GiB for the engine
    cfg = load_config(
        RECIPES[0], ["model.name_or_path=Qwen/Qwen3-4B-Base", "vllm.gpu_memory_utilization=0.05"]
    )
    refused(cfg, "raise vllm.gpu_memory_utilization", num_gpus=8, gpu_memory_gib=80)


def test_refuses_colocated_engines_that_crowd_out_learners():
    # colocated: two engines x 0.45 of 80 GiB = 72 GiB + learner state > 0.9 x 80 GiB
    cfg = load_config(
        RECIPES[0],
        [
            "vllm.mode=colocated",
            "distributed.proposer_engine_devices=[]",
            "distributed.solver_engine_devices=[]",
            "distributed.learner_devices=[]",
            "vllm.gpu_memory_utilization=0.45",
            "model.name_or_path=Qwen/Qwen3-4B-Base",
        ],
    )
    refused(cfg, "lower vllm.gpu_memory_utilization", num_gpus=6, gpu_memory_gib=80)
    cfg.vllm.gpu_memory_utilization = 0.2
    validate_topology(cfg, num_gpus=6, gpu_memory_gib=80)


def test_accelerator_kwargs():
    cfg = load_config(TINY)
    assert accelerator_kwargs(cfg, num_processes=1) == {}
    assert "fsdp_plugin" in accelerator_kwargs(cfg, num_processes=4)
    cfg.distributed.strategy = "ddp"
    assert accelerator_kwargs(cfg, num_processes=4) == {}


def test_time_model_is_monotone_in_hardware():
    cfg = load_config(RECIPES[0])
    P = 1.7e9
    a100 = step_time_estimate(cfg, P, "a100", learner_gpus=6)
    h100 = step_time_estimate(cfg, P, "h100", learner_gpus=6)
    assert h100["step_s"] <= a100["step_s"]
    # rollout tokens per online step at the cap: 6 x 6144 + 36 x 6144 = 258048
    assert load_config(RECIPES[0]).run.mode in ("online", "offline")
    online = load_config(ROOT / "configs/recipes/qwen3-1.7b-online.yaml")
    assert step_time_estimate(online, P, "h100", learner_gpus=6)["rollout_tokens_per_step"] == 258048
