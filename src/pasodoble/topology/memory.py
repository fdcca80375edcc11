"""The memory model: estimated peak bytes per GPU (learner state, compute copies, activations and logits,
generation) and the check that refuses what does not fit.

Every formula, with its sources and the recipes' figures, is in docs/scaling.md ("Memory model").
``memory_plan`` raises ``ConfigError`` naming what to change, or only warns with
``distributed.check_memory=false``. Architectures come from the model's config (``resolve_architecture``);
the recipes' base models are built in, so a recipe validates offline.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from pasodoble.config import Config, ConfigError
from pasodoble.topology.placement import (
    GIB,
    SERVER_MODES,
    Hardware,
    Placement,
    engine_context_length,
    role_new_tokens,
)

log = logging.getLogger(__name__)

_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


# --------------------------------------------------------------------------------------------------
# Architecture and parameter count


@dataclass(frozen=True)
class Architecture:
    """The shapes the memory model needs (a decoder-only transformer with a gated MLP)."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    tie_word_embeddings: bool
    attention_bias: bool = False  # Qwen2: bias on q, k, v
    qk_norm: bool = False  # Qwen3: RMSNorm on q and k (head_dim weights each)

    @property
    def kv_elements_per_token(self) -> int:
        """K and V of every layer for one token."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim


def count_parameters(a: Architecture) -> int:
    """Parameters of a Llama/Qwen-style decoder: embeddings, attention, gated MLP, RMSNorms, LM head."""
    h, q, kv = a.hidden_size, a.num_heads * a.head_dim, a.num_kv_heads * a.head_dim
    attention = h * q + 2 * h * kv + q * h
    if a.attention_bias:
        attention += q + 2 * kv
    if a.qk_norm:
        attention += 2 * a.head_dim
    mlp = 3 * h * a.intermediate_size
    per_layer = attention + mlp + 2 * h  # + input and post-attention RMSNorm
    embeddings = a.vocab_size * h * (1 if a.tie_word_embeddings else 2)
    return embeddings + a.num_layers * per_layer + h  # + final norm


def architecture_from_hf_config(c) -> Architecture:
    """``Architecture`` of a transformers ``PretrainedConfig`` (Llama, Qwen2, Qwen3, Mistral, ...)."""
    heads = c.num_attention_heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
    model_type = getattr(c, "model_type", "")
    bias = getattr(c, "attention_bias", None)
    return Architecture(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        num_layers=c.num_hidden_layers,
        num_heads=heads,
        num_kv_heads=getattr(c, "num_key_value_heads", None) or heads,
        head_dim=head_dim,
        intermediate_size=c.intermediate_size,
        tie_word_embeddings=bool(getattr(c, "tie_word_embeddings", False)),
        attention_bias=bool(bias) if bias is not None else model_type == "qwen2",
        qk_norm=model_type.startswith("qwen3"),
    )


def _qwen3(h: int, layers: int, heads: int, inter: int) -> Architecture:
    return Architecture(151936, h, layers, heads, 8, 128, inter, True, qk_norm=True)


def _qwen25(h: int, layers: int, heads: int, kv: int, inter: int) -> Architecture:
    return Architecture(151936, h, layers, heads, kv, h // heads, inter, True, attention_bias=True)


# The base models of the paper's recipes (values of their config.json), so that a recipe validates
# offline. Any other model is read with AutoConfig.
KNOWN_ARCHITECTURES: dict[str, Architecture] = {
    "Qwen/Qwen3-0.6B-Base": _qwen3(1024, 28, 16, 3072),
    "Qwen/Qwen3-1.7B-Base": _qwen3(2048, 28, 16, 6144),
    "Qwen/Qwen3-4B-Base": _qwen3(2560, 36, 32, 9728),
    "Qwen/Qwen2.5-0.5B": _qwen25(896, 24, 14, 2, 4864),
    "Qwen/Qwen2.5-1.5B": _qwen25(1536, 28, 12, 2, 8960),
    "Qwen/Qwen2.5-3B": _qwen25(2048, 36, 16, 2, 11008),
}


def resolve_architecture(cfg: Config, name_or_path: str | None = None) -> Architecture | None:
    """The architecture of ``name_or_path`` (default: the base model); None when it cannot be read.

    Order: the built-in tiny model; the known recipe models; a local directory or the hub cache
    (``AutoConfig`` with ``local_files_only``); the hub itself unless ``HF_HUB_OFFLINE=1``.
    """
    name = name_or_path or cfg.model.name_or_path
    if name == "tiny":
        from pasodoble.testing.tiny import build_tiny_tokenizer, tiny_model_config

        return architecture_from_hf_config(tiny_model_config(build_tiny_tokenizer()))
    if name in KNOWN_ARCHITECTURES:
        return KNOWN_ARCHITECTURES[name]
    from transformers import AutoConfig

    attempts = [True] if os.environ.get("HF_HUB_OFFLINE") == "1" else [True, False]
    for local_only in attempts:
        try:
            hf = AutoConfig.from_pretrained(
                os.path.expanduser(name),
                local_files_only=local_only,
                trust_remote_code=cfg.model.trust_remote_code,
            )
            return architecture_from_hf_config(getattr(hf, "text_config", hf))
        except Exception as exc:  # noqa: BLE001 - any failure means "unknown", handled by the caller
            log.debug("AutoConfig(%s, local_files_only=%s) failed: %s", name, local_only, exc)
    return None


# --------------------------------------------------------------------------------------------------
# Memory model (docs/scaling.md, "Memory model")


ASLEEP_ENGINE_BYTES = 1 * GIB  # a colocated engine asleep at level 2: CUDA-graph pool and context (estimate)


@dataclass
class MemoryReport:
    """Estimated peak bytes per GPU, by component, for one kind of GPU (learner or engine)."""

    device: str
    components: dict[str, float] = field(default_factory=dict)
    limit: float = 0.0

    @property
    def total(self) -> float:
        return sum(self.components.values())

    def describe(self) -> str:
        parts = ", ".join(f"{k} {v / GIB:.1f}" for k, v in self.components.items() if v)
        return f"{self.device}: {self.total / GIB:.1f} GiB ({parts}) of {self.limit / GIB:.1f} GiB usable"


def _compute_bytes(cfg: Config) -> int:
    return _DTYPE_BYTES[cfg.model.dtype]


def learner_state_bytes(P: int, dtype: str, strategy: str, S: int) -> dict[str, float]:
    """Bytes of one role's learner state on one learner process (docs/scaling.md, "Memory model").

    ``dtype`` is the compute dtype (``model.dtype``); ``gradients`` exist only while the role updates.
    """
    b = _DTYPE_BYTES[dtype]
    if strategy == "deepspeed_zero2":
        if b < 4:  # bf16 engine weights and gradients; fp32 master, moments and gradient partition sharded
            return {"weights": 2 * P, "gradients": 2 * P, "optimizer": (4 + 8 + 4) * P / S}
        return {"weights": 4 * P, "gradients": 4 * P, "optimizer": (8 + 4) * P / S}
    if strategy == "fsdp2" and S > 1:
        return {"weights": 4 * P / S, "gradients": 4 * P / S, "optimizer": 8 * P / S}
    out = {"weights": 4 * P, "gradients": 4 * P, "optimizer": 8 * P}
    if strategy == "ddp" and S > 1:
        out["ddp_buckets"] = 4 * P
    return out


def layer_parameters(a: Architecture) -> int:
    """Parameters of one decoder layer."""
    return (count_parameters(a) - root_parameters(a)) // a.num_layers


def root_parameters(a: Architecture) -> int:
    """Parameters outside the decoder layers: embeddings, an untied LM head, the final norm (FSDP2's root)."""
    return a.vocab_size * a.hidden_size * (1 if a.tie_word_embeddings else 2) + a.hidden_size


def uses_generation_replica(cfg: Config, S: int) -> bool:
    """Whether each learner process keeps a compute-dtype replica of the policy for generation."""
    backend, strategy = cfg.rollout.backend, cfg.distributed.strategy
    if backend not in ("hf", "hf_batched"):
        return False
    if strategy == "fsdp2" and S > 1:
        return True  # generation cannot run through sharded modules
    return backend == "hf_batched" and cfg.model.dtype != "float32" and strategy != "deepspeed_zero2"


def compute_copy_bytes(cfg: Config, P: int, a: Architecture | None, S: int) -> dict[str, float]:
    """Per-process copies of the weights in the compute dtype, for the training peak (docs/scaling.md,
    "Memory model")."""
    b, strategy = _compute_bytes(cfg), cfg.distributed.strategy
    out: dict[str, float] = {}
    if strategy == "fsdp2" and S > 1:
        if a is not None:
            out["FSDP2 unsharded root + 2 layers"] = (root_parameters(a) + 2 * layer_parameters(a)) * (b + 4)
    elif strategy != "deepspeed_zero2" and b < 4:
        out["bf16 weight cast (autocast)"] = b * P
    if uses_generation_replica(cfg, S):
        out["generation replica (both roles)"] = b * P
    return out


def activation_bytes(a: Architecture, cfg: Config, role: str) -> dict[str, float]:
    """Peak activation and logits memory of one micro-batch of ``role`` (docs/scaling.md, "Memory model")."""
    b = _compute_bytes(cfg)
    mb = getattr(cfg, role).micro_batch_size
    T = role_new_tokens(cfg, role)
    s = cfg.rollout.max_prompt_tokens + T
    h, L, V = a.hidden_size, a.num_layers, a.vocab_size
    if cfg.model.gradient_checkpointing:
        acts = 2 * h * L * s * mb * b / 2 + 34 * h * s * mb * b / 2
    else:
        acts = 34 * h * L * s * mb * b / 2
    logits = 2 * mb * (T + 1) * V * b + 2 * min(4, mb) * (T + 1) * V * 4
    from pasodoble.grpo import ENTROPY_POSITIONS

    entropy = 2 * min(T + 1, ENTROPY_POSITIONS) * V * 4
    return {"activations": acts, "logits": logits, "entropy": entropy}


def kv_cache_bytes(a: Architecture, tokens: int, dtype: str) -> float:
    return a.kv_elements_per_token * tokens * _DTYPE_BYTES[dtype]


def _refuse(report: MemoryReport, hint: str, cfg: Config) -> None:
    message = f"the memory model says this does not fit: {report.describe()}; {hint}"
    if cfg.distributed.check_memory:
        raise ConfigError(message)
    log.warning("%s (distributed.check_memory=false: continuing)", message)


def memory_plan(
    cfg: Config, hw: Hardware, placement: Placement, P: int, a: Architecture | None
) -> list[MemoryReport]:
    """Estimate peak memory per learner GPU (training, and generating) and per engine GPU; refuse what does
    not fit (docs/scaling.md, "Memory model", has every term)."""
    d, v = cfg.distributed, cfg.vllm
    mem = hw.gpu_memory_gib * GIB
    limit = mem * d.memory_headroom
    S = placement.learner_processes
    strategy = d.strategy
    state = learner_state_bytes(P, cfg.model.dtype, strategy, S)
    resident = {  # both roles, kept between steps
        f"{k} (2 roles)": 2 * val for k, val in state.items() if k != "gradients"
    }
    copies = compute_copy_bytes(cfg, P, a, S)
    learner = MemoryReport("learner GPU (training)", dict(resident), limit)
    learner.components["gradients (training role)"] = state["gradients"]
    learner.components.update(copies)
    if a is not None:
        peaks = [activation_bytes(a, cfg, r) for r in ("proposer", "solver")]
        learner.components.update(max(peaks, key=lambda x: sum(x.values())))
    vllm = cfg.rollout.backend == "vllm"
    colocated = vllm and v.mode == "colocated"
    if colocated:
        engine = v.gpu_memory_utilization * mem
        if v.sleep_between_steps:
            learner.components["vLLM engine asleep (estimate)"] = ASLEEP_ENGINE_BYTES
        else:
            learner.components["vLLM engine (awake)"] = engine
    hint_train = (
        f"lower proposer/solver.micro_batch_size, set model.gradient_checkpointing=true, use "
        f"distributed.strategy=fsdp2 (now {strategy}), add learner GPUs (now {S} process(es)), or use GPUs "
        "with more memory"
    )
    if colocated and not v.sleep_between_steps:
        hint_train += ", or set vllm.sleep_between_steps=true"
    if learner.total > limit:
        _refuse(learner, hint_train, cfg)
    reports = [learner]
    if colocated:
        gen = MemoryReport("learner GPU while generating (vLLM)", dict(resident), limit)
        if uses_generation_replica(cfg, S):
            gen.components["generation replica (both roles)"] = copies["generation replica (both roles)"]
        gen.components["vLLM engine (gpu_memory_utilization)"] = v.gpu_memory_utilization * mem
        reports.append(gen)
        if v.sleep_between_steps and gen.total > limit:
            _refuse(
                gen,
                "lower vllm.gpu_memory_utilization or shard the learners over more GPUs (distributed.strategy=fsdp2)",
                cfg,
            )
        reports.append(
            _check_engine(
                cfg, a, P, v.gpu_memory_utilization * mem, 1, "colocated engine", _compute_bytes(cfg)
            )
        )
    elif vllm and v.mode in SERVER_MODES:
        for role in ("proposer", "solver"):
            devs = getattr(placement, f"{role}_engine_devices")
            if devs:
                rep = _check_engine(cfg, a, P, v.gpu_memory_utilization * mem, len(devs), f"{role} engine", 2)
                reports.append(rep)
    elif a is not None and not hw.cpu:  # transformers backends generate in the learner processes
        s = cfg.rollout.max_prompt_tokens + max(role_new_tokens(cfg, r) for r in ("proposer", "solver"))
        B = cfg.rollout.generation_batch_size
        gen = MemoryReport(f"learner GPU while generating ({cfg.rollout.backend})", dict(resident), limit)
        if uses_generation_replica(cfg, S):
            gen.components["generation replica (both roles)"] = copies["generation replica (both roles)"]
        elif "bf16 weight cast (autocast)" in copies:
            gen.components["bf16 weight cast (autocast)"] = copies["bf16 weight cast (autocast)"]
        gen.components["KV cache (generation_batch_size sequences)"] = kv_cache_bytes(
            a, B * s, cfg.model.dtype
        )
        gen.components["sampling buffers"] = 3 * B * a.vocab_size * 4
        reports.append(gen)
        if gen.total > limit:
            _refuse(gen, "lower rollout.generation_batch_size or use rollout.backend=vllm", cfg)
    return reports


def _check_engine(
    cfg: Config, a: Architecture | None, P: int, budget: float, tp: int, what: str, b: int
) -> MemoryReport:
    """A vLLM engine must hold its weights (``b`` bytes each, split over ``tp`` GPUs) and the KV cache of one
    full sequence. Colocated engines run in the compute dtype; servers are started in bfloat16."""
    rep = MemoryReport(f"{what} GPU", {"weights": b * P / tp}, limit=budget)
    if a is not None:
        rep.components["KV cache of one max_model_len sequence"] = (
            a.kv_elements_per_token * engine_context_length(cfg) * b / tp
        )
    if rep.total > budget:
        message = (
            f"{what}: weights and one sequence's KV cache need {rep.total / GIB:.1f} GiB per GPU but "
            f"vllm.gpu_memory_utilization={cfg.vllm.gpu_memory_utilization} gives {budget / GIB:.1f} GiB; raise "
            "vllm.gpu_memory_utilization, lower vllm.max_model_len, or give the engine more GPUs"
        )
        if cfg.distributed.check_memory:
            raise ConfigError(message)
        log.warning(message)
    return rep
