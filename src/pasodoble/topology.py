"""Placement and memory check: refuse a run that cannot work before any model is loaded.

``validate_topology(cfg)`` is called at the start of training. It resolves where each role's learner
and generator live (``distributed.*``, ``vllm.*``), checks that the placement is possible (device ids
exist, server-mode engines do not share GPUs with learners, vLLM is not asked to run on a CPU), that
the batch sizes split evenly over the learner processes and into whole GRPO groups, and that each GPU
holds what the memory model says it must. Every refusal is a ``ConfigError`` naming what to change.

The same function validates a recipe against *declared* hardware (``num_gpus``, ``gpu_memory_gib``
arguments, or ``distributed.gpus_per_node`` / ``gpu_memory_gib``), which is how the recipes are tested
on machines without GPUs.

Memory model (bytes, per GPU; ``b`` = bytes per parameter of ``model.dtype``, P = parameters,
S = learner processes that shard a role):

- learner state of one role, torch AdamW on parameters of ``model.dtype`` (fsdp2, ddp):
  weights ``b·P`` + gradients ``b·P`` + AdamW moments ``2·b·P``; DeepSpeed with bf16/fp16 keeps an fp32
  master copy: weights ``b·P`` + gradients ``b·P`` + master ``4·P`` + moments ``8·P``. Sharding divides
  everything by S (fsdp2, deepspeed_zero3), only gradients and optimizer state (deepspeed_zero2), or
  nothing (ddp). Both roles' learners live in every learner process.
- activations of one micro-batch (only one role trains at a time): ``34·h·L·s·mb·b/2`` without
  activation checkpointing (Korthikanti et al. 2022, flash attention, no tensor parallelism), and
  ``2·h·L·s·mb·b/2 + 34·h·s·mb·b/2`` with it; plus the logits of the completion positions and their
  gradient ``2·mb·(T+1)·V·b`` and the fp32 chunk of ``min(4, mb)`` rows the loss works on,
  ``2·min(4, mb)·(T+1)·V·4``. s = prompt + completion tokens, T = completion tokens.
- KV cache per token: ``2·L·kv_heads·head_dim·b_kv`` (K and V of every layer); the hf backend holds
  ``generation_batch_size`` sequences of s tokens; a vLLM engine needs room for at least one sequence of
  ``max_model_len`` tokens beyond its weights.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from pasodoble.config import Config, ConfigError

log = logging.getLogger(__name__)

GIB = 1024**3
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
# Hardware and placement


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


@dataclass
class Plan:
    """The result of a successful validation (used by docs/scaling.md and the smoke script)."""

    hardware: Hardware
    placement: Placement | None
    num_parameters: int | None
    architecture: Architecture | None
    memory: list[MemoryReport] = field(default_factory=list)


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


def _role_new_tokens(cfg: Config, role: str) -> int:
    v = getattr(cfg, role).max_new_tokens
    return v if v is not None else cfg.rollout.max_new_tokens


def _max_model_len(cfg: Config) -> int:
    longest = max(_role_new_tokens(cfg, "proposer"), _role_new_tokens(cfg, "solver"))
    return cfg.vllm.max_model_len or cfg.rollout.max_prompt_tokens + longest


def resolve_placement(cfg: Config, hw: Hardware) -> Placement:
    """Resolve and check device ids; raise ConfigError for an impossible placement."""
    d, G = cfg.distributed, hw.gpus_per_node
    server = cfg.rollout.backend == "vllm" and cfg.vllm.mode == "server"
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
            "GPUs. Clear them, or set rollout.backend=vllm vllm.mode=server"
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
            raise ConfigError(
                f"{what} = {batch} is not divisible by {processes} learner process(es) x {role}.steps_per_batch "
                f"{k}; choose a batch that is a multiple of {processes * k} or change the process count"
            )


# --------------------------------------------------------------------------------------------------
# Memory model


def _shard_factors(strategy: str, S: int) -> tuple[float, float, float]:
    """Divisors of (weights, gradients, optimizer state) per process for a sharding strategy."""
    if S <= 1 or strategy == "ddp":
        return 1, 1, 1
    if strategy == "deepspeed_zero2":
        return 1, S, S
    return S, S, S  # fsdp2, deepspeed_zero3


def learner_state_bytes(P: int, dtype: str, strategy: str, S: int) -> dict[str, float]:
    """Weights, gradients and optimizer state of one role on one learner process (see module doc)."""
    b = _DTYPE_BYTES[dtype]
    fw, fg, fo = _shard_factors(strategy, S)
    if strategy.startswith("deepspeed") and b < 4:
        optimizer = (4 + 8) * P  # fp32 master + two fp32 moments
    else:
        optimizer = 2 * b * P  # two moments in the parameter dtype
    return {"weights": b * P / fw, "gradients": b * P / fg, "optimizer": optimizer / fo}


def activation_bytes(a: Architecture, cfg: Config, role: str) -> dict[str, float]:
    """Peak activation and logits memory of one micro-batch of ``role`` (see module doc)."""
    b = _DTYPE_BYTES[cfg.model.dtype]
    mb = getattr(cfg, role).micro_batch_size
    T = _role_new_tokens(cfg, role)
    s = cfg.rollout.max_prompt_tokens + T
    h, L, V = a.hidden_size, a.num_layers, a.vocab_size
    if cfg.model.gradient_checkpointing:
        acts = 2 * h * L * s * mb * b / 2 + 34 * h * s * mb * b / 2
    else:
        acts = 34 * h * L * s * mb * b / 2
    logits = 2 * mb * (T + 1) * V * b + 2 * min(4, mb) * (T + 1) * V * 4
    return {"activations": acts, "logits": logits}


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
    """Estimate peak memory per learner GPU and per engine GPU; refuse what does not fit."""
    d, v = cfg.distributed, cfg.vllm
    mem = hw.gpu_memory_gib * GIB
    limit = mem * d.memory_headroom
    S = placement.learner_processes
    strategy = d.strategy
    learner = MemoryReport("learner GPU", limit=limit)
    for _role in ("proposer", "solver"):
        for k, val in learner_state_bytes(P, cfg.model.dtype, strategy, S).items():
            learner.components[f"{k} (2 roles)"] = learner.components.get(f"{k} (2 roles)", 0.0) + val
    state_only = learner.total
    if a is not None:
        peaks = [activation_bytes(a, cfg, r) for r in ("proposer", "solver")]
        peak = max(peaks, key=lambda x: sum(x.values()))
        learner.components.update(peak)
    hint_train = (
        f"lower proposer/solver.micro_batch_size, set model.gradient_checkpointing=true, use "
        f"distributed.strategy=fsdp2 or deepspeed_zero3 (now {strategy}), add learner GPUs (now {S} process(es)), "
        f"or use GPUs with more memory"
    )
    if learner.total > limit:
        _refuse(learner, hint_train, cfg)
    vllm = cfg.rollout.backend == "vllm"
    reports = [learner]
    if vllm and v.mode == "colocated":
        engines = 2 * v.gpu_memory_utilization * mem
        if v.sleep_between_steps:
            gen = MemoryReport(
                "learner GPU while generating",
                {"learner state (2 roles)": state_only, "vLLM engines (2 x gpu_memory_utilization)": engines},
                limit,
            )
            reports.append(gen)
            if gen.total > limit:
                _refuse(
                    gen,
                    "lower vllm.gpu_memory_utilization or shard the learners over more GPUs "
                    "(distributed.strategy=fsdp2)",
                    cfg,
                )
        else:
            learner.components["vLLM engines (2 x gpu_memory_utilization)"] = engines
        _check_engine(cfg, a, P, v.gpu_memory_utilization * mem, 1, "colocated engine")
    elif vllm and v.mode == "server":
        for role in ("proposer", "solver"):
            devs = getattr(placement, f"{role}_engine_devices")
            if devs:
                rep = _check_engine(cfg, a, P, v.gpu_memory_utilization * mem, len(devs), f"{role} engine")
                reports.append(rep)
    elif a is not None and not hw.cpu:  # hf backend: generation holds a KV cache in the learner process
        s = cfg.rollout.max_prompt_tokens + max(_role_new_tokens(cfg, r) for r in ("proposer", "solver"))
        gen = MemoryReport(
            "learner GPU while generating (hf)", {"learner state (2 roles)": state_only}, limit
        )
        if strategy in ("fsdp2", "deepspeed_zero3") and S > 1:  # generation needs full weights
            gen.components["full weights for generation"] = _DTYPE_BYTES[cfg.model.dtype] * P
        gen.components["KV cache (generation_batch_size sequences)"] = kv_cache_bytes(
            a, cfg.rollout.generation_batch_size * s, cfg.model.dtype
        )
        reports.append(gen)
        if gen.total > limit:
            _refuse(gen, "lower rollout.generation_batch_size or use rollout.backend=vllm", cfg)
    if learner.total > limit:  # colocated engines that never sleep count here too
        _refuse(learner, hint_train + ", or set vllm.sleep_between_steps=true", cfg)
    return reports


def _check_engine(
    cfg: Config, a: Architecture | None, P: int, budget: float, tp: int, what: str
) -> MemoryReport:
    """A vLLM engine must hold its weights (split over ``tp`` GPUs) and the KV cache of one full sequence."""
    b = 2 if cfg.model.dtype == "float32" else _DTYPE_BYTES[cfg.model.dtype]  # engines serve in 16 bits
    rep = MemoryReport(f"{what} GPU", {"weights": b * P / tp}, limit=budget)
    if a is not None:
        rep.components["KV cache of one max_model_len sequence"] = (
            a.kv_elements_per_token * _max_model_len(cfg) * b / tp
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


# --------------------------------------------------------------------------------------------------
# Entry points


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
    if hw.cpu:
        if cfg.rollout.backend == "vllm":
            raise ConfigError(
                f"rollout.backend=vllm needs CUDA GPUs, but this run is on CPU (run.device={cfg.run.device}); "
                "use rollout.backend=hf, or run on a GPU machine"
            )
        if cfg.model.dtype == "float16":
            raise ConfigError("model.dtype=float16 is not supported on CPU; use float32 (or bfloat16)")
        check_batches(cfg, hw.processes or 1)
        return Plan(hw, None, None, None)
    if cfg.vllm.mode == "server" and cfg.rollout.backend == "vllm":
        for role in ("proposer", "solver"):
            if not getattr(cfg.vllm, f"{role}_url"):
                raise ConfigError(
                    f"vllm.mode=server needs vllm.{role}_url (the base URL of the {role}'s engine, e.g. "
                    "http://localhost:8100); start it with `python -m pasodoble.rollout.vllm serve`"
                )
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


def accelerator_kwargs(cfg: Config, *, num_processes: int | None = None) -> dict:
    """Keyword arguments for ``accelerate.Accelerator`` that realize ``distributed.strategy``.

    Empty for one process or ``ddp`` (accelerate picks DDP under torchrun). ``fsdp2`` gives an FSDP2
    plugin that wraps each decoder layer and keeps full state dicts for checkpoints; the DeepSpeed
    strategies give a ``DeepSpeedPlugin`` whose gradient accumulation is 1 and clipping is off (the
    learner accumulates micro-batches and clips itself).
    """
    n = num_processes if num_processes is not None else int(os.environ.get("WORLD_SIZE", "1"))
    strategy = cfg.distributed.strategy
    if strategy.startswith("deepspeed"):
        from accelerate.utils import DeepSpeedPlugin

        return {
            "deepspeed_plugin": DeepSpeedPlugin(
                zero_stage=int(strategy[-1]), gradient_accumulation_steps=1, gradient_clipping=0.0
            )
        }
    if n <= 1 or strategy == "ddp":
        return {}
    from accelerate.utils import FullyShardedDataParallelPlugin

    return {
        "fsdp_plugin": FullyShardedDataParallelPlugin(
            fsdp_version=2,
            auto_wrap_policy="transformer_based_wrap",
            reshard_after_forward=True,
            state_dict_type="FULL_STATE_DICT",
            activation_checkpointing=cfg.model.gradient_checkpointing,
        )
    }


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
    Tp, Ts = _role_new_tokens(cfg, "proposer"), _role_new_tokens(cfg, "solver")
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


def main(argv: list[str] | None = None) -> int:
    """``python -m pasodoble.topology CONFIG [--gpus 8] [--gpu-memory-gib 80] [key=value ...]``."""
    import argparse

    from pasodoble.config import load_config

    ap = argparse.ArgumentParser(description="Validate a config's placement and memory; print estimates.")
    ap.add_argument("config")
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("--gpus", type=int, default=None, help="declared GPUs per node (default: detect)")
    ap.add_argument("--gpu-memory-gib", type=float, default=None)
    args = ap.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    plan = validate_topology(cfg, num_gpus=args.gpus, gpu_memory_gib=args.gpu_memory_gib)
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
