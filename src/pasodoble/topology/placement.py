"""Where a run's parts live, and whether its batches split over its learners (``validate_topology``'s
first two checks).

``resolve_placement`` resolves the learner and engine GPUs (``distributed.*``, same local ids on every
node) and refuses an impossible placement: an id past the node's GPUs, a server-mode engine sharing a
GPU with a learner or with the other role's engine, no GPU left for learners, a launch whose process
count disagrees with ``distributed.learner_devices``. ``check_batches`` refuses batch sizes that do not
split evenly over the learner processes and into whole GRPO groups. Every refusal is a ``ConfigError``
naming what to change.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pasodoble.config import Config, ConfigError

GIB = 1024**3
SERVER_MODES = ("server", "trl_server")  # vLLM modes whose engines run apart, on their own GPUs
# vLLM's own server as TRL's client needs it (TRL >= 1.16; `trl vllm-serve` is deprecated)
TRL_SERVE = "VLLM_SERVER_DEV_MODE=1 vllm serve"


@dataclass(frozen=True)
class Hardware:
    """What the run has: ``gpus_per_node`` = 0 means a CPU run."""

    num_nodes: int
    gpus_per_node: int
    gpu_memory_gib: float
    processes: int | None = None  # processes actually launched (WORLD_SIZE), None when declared

    @property
    def cpu(self) -> bool:
        return self.gpus_per_node == 0


@dataclass
class Placement:
    """Where things run: local GPU ids (the same on every node) and the learner process count."""

    learner_devices: list[int]
    proposer_engine_devices: list[int]
    solver_engine_devices: list[int]
    learner_processes: int


def detect_hardware(cfg: Config) -> Hardware:
    """The hardware of this machine (config fields override detection); CPU when run.device says so."""
    import torch

    d = cfg.distributed
    world = int(os.environ.get("WORLD_SIZE", "1"))
    wants_cpu = cfg.run.device == "cpu" or (cfg.run.device == "auto" and not torch.cuda.is_available())
    if wants_cpu:
        return Hardware(d.num_nodes, 0, 0.0, processes=world)
    gpus = d.gpus_per_node if d.gpus_per_node is not None else torch.cuda.device_count()
    mem = d.gpu_memory_gib
    if mem is None:
        mem = torch.cuda.get_device_properties(0).total_memory / GIB if gpus else 0.0
    return Hardware(d.num_nodes, gpus, mem, processes=world)


def role_new_tokens(cfg: Config, role: str) -> int:
    """The completion cap of ``role``: its own ``max_new_tokens``, else ``rollout.max_new_tokens``."""
    v = getattr(cfg, role).max_new_tokens
    return v if v is not None else cfg.rollout.max_new_tokens


def engine_context_length(cfg: Config) -> int:
    """A vLLM engine's context: ``vllm.max_model_len``, else the prompt cap plus the longer completion cap."""
    longest = max(role_new_tokens(cfg, "proposer"), role_new_tokens(cfg, "solver"))
    return cfg.vllm.max_model_len or cfg.rollout.max_prompt_tokens + longest


def resolve_placement(cfg: Config, hw: Hardware) -> Placement:
    """Resolve and check device ids; raise ConfigError for an impossible placement."""
    d, G = cfg.distributed, hw.gpus_per_node
    server = cfg.rollout.backend == "vllm" and cfg.vllm.mode in SERVER_MODES
    named = {
        "distributed.learner_devices": d.learner_devices,
        "distributed.proposer_engine_devices": d.proposer_engine_devices,
        "distributed.solver_engine_devices": d.solver_engine_devices,
    }
    for key, ids in named.items():
        bad = [i for i in ids if i < 0 or i >= G]
        if bad:
            raise ConfigError(
                f"{key} lists GPU {bad[0]}, but a node has {G} GPU(s) (ids 0..{G - 1}); use ids below {G} "
                f"or set distributed.gpus_per_node to the real count"
            )
        if len(set(ids)) != len(ids):
            raise ConfigError(f"{key} lists a GPU twice: {ids}")
    engines = d.proposer_engine_devices + d.solver_engine_devices
    if engines and not server:
        raise ConfigError(
            "distributed.proposer_engine_devices / solver_engine_devices place server-mode engines; with "
            f"rollout.backend={cfg.rollout.backend} vllm.mode={cfg.vllm.mode} the generators share the learner "
            "GPUs. Clear them, or set rollout.backend=vllm vllm.mode=server (or trl_server)"
        )
    both = set(d.proposer_engine_devices) & set(d.solver_engine_devices)
    if both:
        raise ConfigError(
            f"GPU {sorted(both)[0]} is in both distributed.proposer_engine_devices and solver_engine_devices; "
            "give each role's engine its own GPUs"
        )
    overlap = set(d.learner_devices) & set(engines)
    if overlap:
        raise ConfigError(
            f"GPU {sorted(overlap)[0]} is both a learner device and a server-mode engine device; in server mode "
            "engines need their own GPUs: remove it from distributed.learner_devices or from the engine "
            "devices (or use vllm.mode=colocated)"
        )
    learners = list(d.learner_devices) or [i for i in range(G) if i not in set(engines)]
    if not learners:
        raise ConfigError(
            f"no GPU is left for the learners: the engines take all {G} GPU(s) of a node; free some "
            "(distributed.*_engine_devices) or add GPUs"
        )
    processes = hw.num_nodes * len(learners)
    if hw.processes is not None:
        if d.learner_devices and hw.processes != processes:
            raise ConfigError(
                f"{hw.processes} training process(es) were launched, but distributed.learner_devices "
                f"({len(learners)} per node x {hw.num_nodes} node(s)) asks for {processes}; launch "
                f"torchrun --nproc_per_node {len(learners)} or change distributed.learner_devices"
            )
        processes = hw.processes
        if not d.learner_devices and processes > hw.num_nodes * len(learners):
            raise ConfigError(
                f"{processes} training processes were launched, but only {len(learners)} GPU(s) per node "
                f"x {hw.num_nodes} node(s) are free for learners; launch fewer processes"
            )
    return Placement(learners, list(d.proposer_engine_devices), list(d.solver_engine_devices), processes)


def check_batches(cfg: Config, processes: int) -> None:
    """Logical batches must split evenly over the learner processes and into whole GRPO groups.

    Proposer batch = proposer.group_size (N). The Solver trains on (trainable questions) x M samples,
    a multiple of M that varies by step (online, and offline where only the trainable questions of a
    buffer batch count), so its smallest value M must give every process its optimizer steps:
    M >= processes x steps_per_batch. Offline, the drawn batch batch_questions x M must also split evenly.
    """
    for role in ("proposer", "solver"):
        rc = getattr(cfg, role)
        k = rc.steps_per_batch
        if role == "solver" and rc.group_size < processes * k:
            raise ConfigError(
                f"solver.group_size={rc.group_size} is smaller than {processes} learner process(es) x "
                f"solver.steps_per_batch {k}: a step with one trainable question gives only "
                f"{rc.group_size} Solver samples, too few for every process to make its optimizer steps; "
                "raise solver.group_size, lower steps_per_batch or launch fewer processes"
            )
        if role == "proposer":
            batch, what = rc.group_size, "proposer.group_size (N: the Proposer's batch)"
        elif cfg.run.mode == "offline":
            batch, what = rc.batch_questions * rc.group_size, "solver.batch_questions x solver.group_size"
            if rc.batch_questions % k:
                raise ConfigError(
                    f"solver.steps_per_batch={k} does not divide solver.batch_questions={rc.batch_questions}, "
                    f"so an optimizer step would train on part of a GRPO group of {rc.group_size}; make "
                    "batch_questions a multiple of steps_per_batch"
                )
        else:
            if rc.group_size < k:
                raise ConfigError(
                    f"solver.steps_per_batch={k} exceeds solver.group_size={rc.group_size}: a step with one "
                    "trainable question could not make its optimizer steps; lower steps_per_batch"
                )
            continue
        if batch % (processes * k):
            fits = [n for n in range(1, batch // k + 1) if batch % (n * k) == 0]
            raise ConfigError(
                f"{what} = {batch} is not divisible by {processes} learner process(es) x {role}.steps_per_batch "
                f"{k}; choose a batch that is a multiple of {processes * k}, or launch {', '.join(map(str, fits))} "
                "learner process(es) (distributed.learner_devices / torchrun --nproc_per_node) and give the other "
                "GPUs to engines"
            )
