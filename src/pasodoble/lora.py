"""LoRA adapters for a role (``model.lora.*``), through peft: wrap, adapter-only state, merged weights.

A role listed in ``model.lora.roles`` gets ``peft.get_peft_model(model, LoraConfig(...))``: low-rank
adapters on the target modules, everything else frozen. peft injects its layers into the transformers
model in place, so the learner trains, and the transformers backend generates through, that same
module (``PeftModel.get_base_model()``: a plain ``forward`` signature, the adapters active); the
``PeftModel`` is kept as the handle for peft's adapter state dict.

- Checkpoints hold the adapters and their optimizer state only (``adapter_state_dict``; peft's key
  names without the adapter name); the base weights come from the role's model path.
- Engines that are fed weights (``weights.full_state_items``: vLLM, the hf_batched replica) and
  ``save_pretrained`` / ``pasodoble export`` get merged weights ``W + (alpha / r) B A`` under the base
  model's parameter names (``merged_state_items``), computed per tensor with peft's
  ``get_delta_weight``, never by merging in place (an unmerge would not restore the float32 base
  bit for bit).

peft is the optional ``peft`` extra; it is imported only when a role uses LoRA.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from typing import Any

import torch

from pasodoble.config import ConfigError, LoRAConfig
from pasodoble.errors import UserError, missing_extra


def check_available() -> None:
    """Raise ``UserError`` (one line) when peft is not installed."""
    import importlib.util

    if importlib.util.find_spec("peft") is None:
        raise missing_extra("peft", "model.lora.roles needs peft")


def check_layout(strategy: str, num_processes: int) -> None:
    """LoRA trains on one process or under DDP; FSDP2 and DeepSpeed ZeRO-2 layouts are refused."""
    if strategy in ("fsdp2", "deepspeed_zero2"):
        raise ConfigError(
            f"model.lora with distributed.strategy={strategy} ({num_processes} process"
            f"{'es' if num_processes != 1 else ''}) is not supported: the adapters and their optimizer state "
            "are small and need no sharding; set distributed.strategy=ddp (or run one process)"
        )


def peft_config(cfg: LoRAConfig):
    """peft's ``LoraConfig`` for ``cfg`` (``[all-linear]`` becomes peft's ``'all-linear'``)."""
    from peft import LoraConfig

    targets: Any = list(cfg.target_modules)
    if targets == ["all-linear"]:
        targets = "all-linear"
    return LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )


def wrap(model: torch.nn.Module, cfg: LoRAConfig, *, role: str = "model") -> torch.nn.Module:
    """``peft.get_peft_model(model, ...)``: adapters on ``cfg.target_modules``, the base frozen.

    The adapters' B matrices start at zero, so the wrapped model computes exactly what ``model`` did.
    Their A matrices are drawn from torch's global RNG (the run's seed makes them reproducible).
    Raises ``UserError`` when no module matches ``target_modules``.
    """
    check_available()
    from peft import get_peft_model

    try:
        with warnings.catch_warnings():  # peft asks transformers' deprecated is_gradient_checkpointing
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
            return get_peft_model(model, peft_config(cfg))
    except ValueError as exc:  # peft: "Target modules {...} not found in the base model"
        raise UserError(
            f"{role}: model.lora.target_modules={cfg.target_modules} does not fit the model "
            f"({' '.join(str(exc).split())[:200]}); name its linear layers (e.g. q_proj, v_proj) or all-linear"
        ) from None


def is_peft_model(model: Any) -> bool:
    """True for a ``peft.PeftModel`` (without importing peft when nothing has)."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def lora_modules(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Name -> module of every peft LoRA layer inside ``model`` (empty when peft was never imported)."""
    if "peft" not in sys.modules:
        return {}
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}


def has_lora(model: torch.nn.Module) -> bool:
    return bool(lora_modules(model))


def adapter_state_dict(peft_model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights only (peft's names, adapter name removed); live tensors, like ``state_dict``."""
    from peft import get_peft_model_state_dict

    # "auto" could look the base model up on the hub; adapters on embeddings are saved either way
    return get_peft_model_state_dict(peft_model, save_embedding_layers=False)


def load_adapter_state_dict(peft_model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy adapter weights saved by ``adapter_state_dict`` into ``peft_model``.

    Raises ``ValueError`` when ``state`` lacks an adapter weight of the model or holds others.
    """
    from peft import set_peft_model_state_dict

    expected = set(adapter_state_dict(peft_model))
    missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or extra:
        what = f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}"
        raise ValueError(
            f"the LoRA adapters do not fit this model ({what}): rank, target modules or base model differ"
        )
    result = set_peft_model_state_dict(peft_model, state)
    if result.unexpected_keys:
        raise ValueError(f"the LoRA adapters do not fit this model (unexpected {result.unexpected_keys[:3]})")


def merged_state_items(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """``(base name, tensor)`` for every entry of the base model's state dict, adapters merged in.

    ``model`` is a ``PeftModel`` or the transformers model peft injected its layers into. A LoRA
    layer's ``base_layer.weight`` comes out as ``weight`` plus the active adapters' deltas (peft's
    ``get_delta_weight``: ``(alpha / r) B A``, what ``merge_and_unload`` adds); its adapter tensors are
    left out; every other entry is the model's own tensor. The model is not modified.
    """
    if is_peft_model(model):
        model = model.get_base_model()
    layers = lora_modules(model)
    skip: set[str] = set()  # adapter tensors: module name prefixes
    rename: dict[str, str] = {}  # "<layer>.base_layer." -> "<layer>."
    for name, layer in layers.items():
        for attr in layer.adapter_layer_names:
            skip.add(f"{name}.{attr}.")
        rename[f"{name}.base_layer."] = f"{name}."
    for key, tensor in model.state_dict().items():
        if any(key.startswith(p) for p in skip):
            continue
        owner, _, leaf = key.rpartition(".")
        prefix = owner + "."
        if prefix in rename:
            layer_name = owner.removesuffix(".base_layer")
            layer = layers[layer_name]
            key = rename[prefix] + leaf
            if leaf == "weight" and not layer.merged:
                for adapter in layer.active_adapters:
                    if adapter in layer.lora_A or adapter in getattr(layer, "lora_embedding_A", {}):
                        tensor = tensor + layer.get_delta_weight(adapter).to(tensor.dtype)
        yield key, tensor


def base_parameter_names(model: torch.nn.Module) -> tuple[set[str], set[str]]:
    """(unique, all) parameter names of ``model`` under the base model's names (``base_layer`` dropped)."""
    if is_peft_model(model):
        model = model.get_base_model()

    def clean(name: str) -> str:
        return name.replace(".base_layer.", ".")

    unique = {clean(n) for n, _ in model.named_parameters()}
    every = {clean(n) for n, _ in model.named_parameters(remove_duplicate=False)}
    return unique, every


def merged_model(peft_model: torch.nn.Module) -> torch.nn.Module:
    """The base transformers model with the adapters merged in (peft's ``merge_and_unload``; in place)."""
    return peft_model.merge_and_unload()
