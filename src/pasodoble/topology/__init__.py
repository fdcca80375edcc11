"""Placement and memory check: refuse a run that cannot work before any model is loaded.

``validate_topology(cfg)`` (``validate.py``) is called at the start of training, and by ``pasodoble plan``
against declared hardware. It resolves where each role's learner and generator live and checks that the
placement is possible and the batches split evenly over the learner processes (``placement.py``), then
that each GPU holds what the memory model says it must (``memory.py``; every formula is in
docs/scaling.md, "Memory model"). Every refusal is a ``ConfigError`` naming what to change.

The time model, the launch commands and the command line are ``pasodoble plan``
(``pasodoble.commands.plan``); ``python -m pasodoble.topology`` runs it, and its names stay importable
from here.
"""

from __future__ import annotations

from typing import Any

from pasodoble.topology.memory import (
    KNOWN_ARCHITECTURES,
    Architecture,
    MemoryReport,
    activation_bytes,
    architecture_from_hf_config,
    compute_copy_bytes,
    count_parameters,
    kv_cache_bytes,
    layer_parameters,
    learner_state_bytes,
    memory_plan,
    resolve_architecture,
    root_parameters,
    uses_generation_replica,
)
from pasodoble.topology.placement import (
    GIB,
    Hardware,
    Placement,
    check_batches,
    detect_hardware,
    engine_context_length,
    resolve_placement,
)
from pasodoble.topology.validate import Plan, validate_topology

# Names of ``pasodoble.commands.plan`` importable from here (loaded on first use: commands sit above this).
_PLAN_COMMAND = ("GPUS", "launch_commands", "main", "step_time_estimate")


def __getattr__(name: str) -> Any:
    if name in _PLAN_COMMAND:
        from pasodoble.commands import plan

        return getattr(plan, name)
    raise AttributeError(f"module 'pasodoble.topology' has no attribute {name!r}")


__all__ = [
    "GIB",
    "GPUS",
    "KNOWN_ARCHITECTURES",
    "Architecture",
    "Hardware",
    "MemoryReport",
    "Placement",
    "Plan",
    "activation_bytes",
    "architecture_from_hf_config",
    "check_batches",
    "compute_copy_bytes",
    "count_parameters",
    "detect_hardware",
    "engine_context_length",
    "kv_cache_bytes",
    "launch_commands",
    "layer_parameters",
    "learner_state_bytes",
    "main",
    "memory_plan",
    "resolve_architecture",
    "resolve_placement",
    "root_parameters",
    "step_time_estimate",
    "uses_generation_replica",
    "validate_topology",
]
