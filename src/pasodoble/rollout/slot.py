"""One generator holding one role's weights at a time: ``RoleSlot``.

Both roles have one architecture, so a process keeps one generator for both and swaps the weights in at
a role switch and after an update. Three generators work this way, all through ``RoleSlot``:

- ``parallel.GenerationReplica``: the full compute-dtype copy that generates under FSDP2 (``ModelReplica``);
- ``hf_batched``'s compute-dtype replica for CUDA graphs (``ModelReplica``), one per architecture;
- the colocated vLLM engine (``vllm/local.py``, ``ColocatedEngine``).

The slot knows which role's *current* weights it holds; ``invalidate(role)`` (after the role's update)
makes them stale; ``ensure(role, model)`` loads ``model``'s weights when the slot holds another role's,
none or stale ones and returns the seconds the load took, for ``time/weight_sync``. A load may be a
collective (it gathers FSDP2 shards): every process calls ``ensure`` at the same points.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Hashable

import torch

from pasodoble.rollout.base import device_time
from pasodoble.weights import full_state_items


class RoleSlot(ABC):
    """Which role's current weights a generator holds; subclasses write the load (``_load``).

    ``holds`` is that role (any hashable key: a role name, or a backend's own key), None when it holds
    none or stale ones; ``loads`` counts the loads.
    """

    def __init__(self) -> None:
        self.holds: Hashable | None = None
        self.loads = 0

    def invalidate(self, role: Hashable) -> None:
        """``role``'s weights were updated: a slot holding them holds stale ones."""
        if self.holds == role:
            self.holds = None

    def forget(self) -> None:
        """The generator dropped its weights (a vLLM engine put to sleep at level 2)."""
        self.holds = None

    def ensure(self, role: Hashable, model: torch.nn.Module) -> float:
        """Hold ``role``'s current weights, loading them from ``model`` unless they are held already;
        return the seconds the load took (0.0 when there was none)."""
        if self.holds == role:
            return 0.0
        started = time.perf_counter()
        self._load(role, model)
        self.holds = role
        self.loads += 1
        return time.perf_counter() - started

    @abstractmethod
    def _load(self, role: Hashable, model: torch.nn.Module) -> None:
        """Load ``role``'s current weights from ``model`` into the generator."""


class ModelReplica(RoleSlot):
    """A ``RoleSlot`` over a full transformers module in a compute dtype (``module``, in eval mode, no
    gradients): a load copies the role's full weights into it, cast to ``dtype`` (gathering FSDP2 shards,
    a collective), and waits for the device to finish the copies."""

    def __init__(self, module: torch.nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.module = module.eval()
        self.module.requires_grad_(False)
        self.dtype = dtype

    @torch.no_grad()
    def _load(self, role: Hashable, model: torch.nn.Module) -> None:
        target = self.module.state_dict()
        for name, full in full_state_items(model, dtype=self.dtype):
            target[name].copy_(full)
        device_time(next(self.module.parameters()).device)
