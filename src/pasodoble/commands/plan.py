"""`pasodoble plan CONFIG [--gpus 8] [--gpu-memory-gib 80] [key=value ...]`: check a run before launching it.

Validates the config against the declared (or detected) hardware (``topology.validate_topology``:
placement, batch sizes, memory) and prints the memory estimate of each kind of GPU, the time per step and
per run, and the shell commands that start the run; a refusal is one line on stderr (``refused: ...``)
and exit status 2. ``python -m pasodoble.topology ...`` (cited by the recipe headers) is the same.

The time model (``step_time_estimate``) and the launch commands (``launch_commands``) live here: estimates
from datasheet figures and shell lines, used by no training code. docs/scaling.md ("Time model", "Placement
and launch") explains both.
"""

from __future__ import annotations

import argparse
import sys

from pasodoble.config import Config, ConfigError, load_config
from pasodoble.topology import Plan, validate_topology
from pasodoble.topology.placement import SERVER_MODES, TRL_SERVE, engine_context_length, role_new_tokens

TRL_WEIGHT_TRANSFER = """--weight-transfer-config '{"backend": "nccl"}'"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config file (a recipe: configs/recipes/)")
    parser.add_argument("overrides", nargs="*", help="section.field=value overrides")
    parser.add_argument("--gpus", type=int, default=None, help="declared GPUs per node (default: detect)")
    parser.add_argument(
        "--gpu-memory-gib", type=float, default=None, help="declared memory per GPU (default: detect)"
    )


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    try:
        plan = validate_topology(cfg, num_gpus=args.gpus, gpu_memory_gib=args.gpu_memory_gib)
    except ConfigError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    print(f"OK: {cfg.model.name_or_path}, {plan.hardware}")
    if plan.num_parameters:
        print(f"parameters: {plan.num_parameters / 1e9:.3f} B")
    for rep in plan.memory:
        print("  " + rep.describe())
    if plan.num_parameters and plan.placement is not None:
        n = plan.placement.learner_processes
        for gpu in GPUS:
            for label, mean in (("worst case", None), ("mean completion 1500", 1500.0)):
                t = step_time_estimate(cfg, plan.num_parameters, gpu, learner_gpus=n, mean_completion=mean)
                print(
                    f"  {gpu} {label}: step {t['step_s']:.0f} s, run {t['run_h']:.1f} h, "
                    f"rollout tokens/step {t['rollout_tokens_per_step']:.0f}"
                )
    print("accepted launch:")
    for line in launch_commands(cfg, plan, args.config, args.overrides):
        print("  " + line)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m pasodoble.topology CONFIG ...``: what ``pasodoble plan`` does (a config that does not
    load is refused on one line too)."""
    parser = argparse.ArgumentParser(
        prog="python -m pasodoble.topology",
        description="Validate a config's placement and memory; print estimates and the launch "
        "(pasodoble plan).",
    )
    add_arguments(parser)
    args = parser.parse_intermixed_args(argv)
    try:
        return run(args)
    except ConfigError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2


# --------------------------------------------------------------------------------------------------
# Time model (docs/scaling.md): estimates from published hardware figures, not measurements.

# Dense bf16 peak FLOP/s and HBM bandwidth of the SXM parts (NVIDIA A100 and H100 datasheets).
GPUS = {
    "a100": {"flops": 312e12, "bandwidth": 2.039e12, "memory_gib": 80},
    "h100": {"flops": 989e12, "bandwidth": 3.35e12, "memory_gib": 80},
}


def step_time_estimate(
    cfg: Config,
    P: int,
    gpu: str,
    *,
    learner_gpus: int,
    mean_completion: float | None = None,
    mfu: float = 0.35,
    bandwidth_eff: float = 0.5,
    decode_overhead_s: float = 0.004,
) -> dict[str, float]:
    """Seconds per online step (or per offline iteration) of the recipe ``cfg`` on ``gpu``.

    Generation is decode-bound: sequences advance one token per engine step and a step reads all
    weights once, so one role's generation takes ``T x max(weights / (bandwidth_eff x bandwidth),
    decode_overhead_s)`` for its longest completion T. Training costs ``6·P`` FLOPs per token (8·P with
    activation checkpointing) at ``mfu`` of peak on ``learner_gpus``. ``mean_completion`` defaults to
    the cap (worst case).
    """
    g = GPUS[gpu]
    b_engine = 2
    per_token_decode = max(b_engine * P / (bandwidth_eff * g["bandwidth"]), decode_overhead_s)
    N, M = cfg.proposer.group_size, cfg.solver.group_size
    Tp, Ts = role_new_tokens(cfg, "proposer"), role_new_tokens(cfg, "solver")
    mean_p = min(mean_completion or Tp, Tp)
    mean_s = min(mean_completion or Ts, Ts)
    prompt_p, prompt_s = cfg.knowledge.max_snippet_tokens + 200, 300
    gen_p, gen_s = Tp * per_token_decode, Ts * per_token_decode  # the longest completion bounds a batch
    flops_per_token = (8 if cfg.model.gradient_checkpointing else 6) * P
    rate = mfu * g["flops"] * learner_gpus
    train_p = N * (prompt_p + mean_p) * flops_per_token / rate
    solver_questions = N if cfg.run.mode == "online" else cfg.solver.batch_questions
    train_s = solver_questions * M * (prompt_s + mean_s) * flops_per_token / rate
    out = {
        "generate_proposer_s": gen_p,
        "generate_solver_s": gen_s,
        "train_proposer_s": train_p,
        "train_solver_s": train_s,
        "rollout_tokens_per_step": N * mean_p + N * M * mean_s,
    }
    if cfg.run.mode == "online":
        out["step_s"] = gen_p + gen_s + train_p + train_s
        out["run_h"] = out["step_s"] * cfg.run.max_steps / 3600
    else:
        kp, ks = cfg.proposer.updates_per_phase, cfg.solver.updates_per_phase
        out["step_s"] = kp * (gen_p + gen_s + train_p) + ks * (gen_s + train_s)  # one iteration
        out["run_h"] = out["step_s"] * cfg.run.max_steps / 3600
    return out


# --------------------------------------------------------------------------------------------------
# Launch commands


def _gpu_list(ids: list[int]) -> str:
    return ",".join(str(i) for i in ids)


def launch_commands(
    cfg: Config, plan: Plan, config_path: str, overrides: list[str] | None = None
) -> list[str]:
    """The shell commands that start the run ``plan`` accepted: engine servers (server modes), then the
    learners' ``torchrun`` (run on every node with its ``--node_rank`` when ``distributed.num_nodes`` > 1)."""
    from urllib.parse import urlparse

    p = plan.placement
    if p is None:  # CPU
        n = plan.hardware.processes or 1
        train = f"pasodoble train {config_path}"
        return [f"torchrun --nproc_per_node {n} -m pasodoble.cli train {config_path}" if n > 1 else train]
    lines: list[str] = []
    v = cfg.vllm
    if cfg.rollout.backend == "vllm" and v.mode in SERVER_MODES:
        for role in ("proposer", "solver"):
            devices = getattr(p, f"{role}_engine_devices")
            url = urlparse(getattr(v, f"{role}_url"))
            local = url.hostname in ("localhost", "127.0.0.1", "::1")
            model = getattr(cfg, role).model_path or cfg.model.name_or_path
            tp = f" --tensor-parallel-size {len(devices)}" if len(devices) > 1 else ""
            common = (
                f"--port {url.port or 8000} --max-model-len {engine_context_length(cfg)} "
                f"--gpu-memory-utilization {v.gpu_memory_utilization}{tp}"
            )
            if v.mode == "trl_server":
                host = "127.0.0.1" if local else "0.0.0.0"
                cmd = f"{TRL_SERVE} {model} {common} --host {host} --dtype bfloat16 {TRL_WEIGHT_TRANSFER}"
            else:
                token = "" if local else f"{v.token_env}=$TOKEN "
                host = "" if local else " --host 0.0.0.0"
                cmd = f"{token}python -m pasodoble.rollout.vllm serve --model {model} {common}{host} --max-body-mb {max(512, v.bucket_mb * 2):g}"
            where = "" if devices else "  # on the engine's own machine"
            prefix = f"CUDA_VISIBLE_DEVICES={_gpu_list(devices)} " if devices else ""
            lines.append(f"{prefix}{cmd} &{where}")
    n = len(p.learner_devices)
    every = list(range(plan.hardware.gpus_per_node))
    prefix = "" if p.learner_devices == every else f"CUDA_VISIBLE_DEVICES={_gpu_list(p.learner_devices)} "
    nodes = cfg.distributed.num_nodes
    rdzv = (
        f" --nnodes {nodes} --node_rank $NODE_RANK --rdzv_backend c10d --rdzv_endpoint $MASTER_HOST:29500"
        if nodes > 1
        else ""
    )
    extra = "".join(f" {o}" for o in overrides or [])
    lines.append(f"{prefix}torchrun --nproc_per_node {n}{rdzv} -m pasodoble.cli train {config_path}{extra}")
    if nodes > 1:
        lines.append(
            f"# on each of the {nodes} nodes (NODE_RANK 0..{nodes - 1}); run.out_dir must be on a filesystem "
            "every node shares (checked at start)"
        )
    return lines
