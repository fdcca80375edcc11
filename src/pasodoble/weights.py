"""Full tensors of a training model, whatever its sharding: what generation engines are fed.

The learner keeps float32 master weights, sharded over processes under FSDP2 (``DTensor``
parameters). A generation engine (a vLLM engine, or a transformers replica) needs the *full* weights,
usually in its own 16-bit compute dtype. ``full_state_items`` yields them one tensor at a time, so
no full copy of the model is ever held beside the engine's. A model with LoRA adapters (``lora.py``)
yields merged weights under the base model's parameter names.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


def full_state_items(
    model: torch.nn.Module,
    *,
    dtype: torch.dtype | None = None,
    keep: bool = True,
    skip_tied: bool = False,
) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, full tensor)`` for every entry of ``model.state_dict()``, in order, cast to ``dtype``.

    FSDP2 ``DTensor`` shards are gathered with ``full_tensor()``, a collective: every process must
    iterate to the end, in the same order. With ``keep=False`` the tensors are gathered but not
    yielded (a process that only takes part in the collectives). ``dtype`` casts floating-point
    tensors only (None keeps the stored dtype, float32 for master weights). ``skip_tied`` leaves out
    the second name of a tied parameter (``lm_head.weight`` when the embeddings are tied: engines
    tie it themselves), decided from the module structure, so every process skips the same entries.
    A model with peft LoRA layers (a role of ``model.lora.roles``) yields ``W + (alpha / r) B A`` for
    each adapted weight, under the base model's names, and no adapter tensors (``lora.merged_state_items``).
    """
    from pasodoble import lora

    adapted = lora.is_peft_model(model) or lora.has_lora(model)
    tied: set[str] = set()
    if skip_tied:
        if adapted:
            unique, every = lora.base_parameter_names(model)
        else:
            unique = {n for n, _ in model.named_parameters()}
            every = {n for n, _ in model.named_parameters(remove_duplicate=False)}
        tied = every - unique
    items = lora.merged_state_items(model) if adapted else model.state_dict().items()
    for name, t in items:
        if name in tied:
            continue
        full = t.full_tensor() if hasattr(t, "full_tensor") else t
        if not keep:
            continue
        full = full.detach()
        if dtype is not None and full.is_floating_point() and full.dtype != dtype:
            full = full.to(dtype)
        yield name, full


def is_sharded(model: torch.nn.Module) -> bool:
    """True when any parameter of ``model`` is a ``DTensor`` (FSDP2): reading it needs a collective."""
    return any(hasattr(p, "full_tensor") for p in model.parameters())
