"""Cold-start supervised fine-tuning of one role on chat-format JSONL (``pasodoble sft train``).

Data: one JSON object per line, ``{"messages": [{"role": "user", "content": ...}, ...,
{"role": "assistant", "content": ...}]}`` (what ``pasodoble sft build-data`` writes). The last message
must be the assistant's; everything before it (system, user, earlier turns) is the prompt.

**Loss masking.** ``encode_chat`` renders the prompt with the tokenizer's chat template and its
generation prompt (exactly the text the RL rollouts start from, ``prompts.apply_chat``), renders the
whole conversation, checks that the first is a prefix of the second, and tokenizes the two parts
separately: ``input_ids = ids(prompt) + ids(rest)``. Labels are -100 on every prompt token, so only
assistant tokens carry loss, and the prompt ids are the ids the rollout backend will see. The
assistant part is cut after its first stop token: the template's end-of-turn token (``<|im_end|>``) or
the EOS, whichever comes first (one is appended when the template renders neither), so the model
learns to stop where generation stops, also for base models whose EOS is ``<|endoftext|>``.

**Batching.** Default: examples of a step are padded on the right to the longest one (with an
attention mask). ``packing=True`` lays the step's examples end to end in rows of at most
``max_length`` tokens with ``position_ids`` restarting at 0 for each example and no attention mask.
transformers (>= 4.54, sdpa/eager/flash kernels) derives a block-diagonal causal mask from such
position ids, so no token attends across an example boundary and the packed loss equals the padded
loss (tested). Labels are shifted per row; the first token of every example is a prompt token
(label -100), so no loss term crosses a boundary either. Caveat: a custom attention kernel that
ignores position-id resets would let examples see each other; use the default batching then.

**Loss.** Token mean over the assistant tokens of the whole optimizer step (all micro-batches and
processes), so gradient accumulation and data parallelism give the full-batch gradient.

**Scale.** The same layouts, precision and mechanics as RL training: the model is a
``trainable.Trainable``, the layer the GRPO learner stands on (float32 master weights and AdamW state,
``dtype`` the compute dtype; under ``torchrun`` the run's ``strategy``: fsdp2 shards the model, ddp
replicates it, deepspeed_zero2 uses DeepSpeed's engine). Every process runs the same number of
micro-batches per step (zero-weight passes where its share is shorter), so sharded collectives stay
in step.

**Resume.** Every ``checkpoint_every`` optimizer steps (and when the run ends) the model, optimizer,
scheduler, RNG states and data position (epoch, examples consumed) are written atomically with
``pasodoble.checkpoint`` (sharded under FSDP2, DeepSpeed's own checkpoint under DeepSpeed);
``resume=True`` continues from the newest complete checkpoint. The epoch order is a seeded
permutation, so the resumed run sees the same batches.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from pasodoble.errors import UserError
from pasodoble.jsonl import read_jsonl

if TYPE_CHECKING:
    from pasodoble.trainable import Trainable

IGNORE = -100
ROLES = ("proposer", "solver")


@dataclass
class SFTConfig:
    """Settings of ``pasodoble sft train``: each field is the command-line option of the same name
    (``batch_size`` is ``--batch-size``), built from this class with its help text (commands/options.py)."""

    role: str = field(
        default="solver",
        metadata={"help": "the role the data trains", "choices": ("proposer", "solver"), "required": True},
    )
    data: str = field(
        default="",
        metadata={
            "help": "chat-format JSONL (build-data's proposer.jsonl or solver.jsonl)",
            "required": True,
        },
    )
    model: str = field(
        default="tiny",
        metadata={"help": "base model name or directory ('tiny' for smoke tests)", "required": True},
    )
    out: str = field(
        default="",
        metadata={"help": "output directory: HF model + tokenizer, checkpoints, summary", "required": True},
    )
    epochs: float = field(
        default=2.0, metadata={"help": "passes over the training split (may be fractional)"}
    )
    lr: float = field(default=1e-5, metadata={"help": "AdamW peak learning rate"})
    batch_size: int = field(default=32, metadata={"help": "examples per optimizer step"})
    micro_batch_size: int = field(default=4, metadata={"help": "examples (or packed rows) per forward pass"})
    max_length: int = field(default=4096, metadata={"help": "tokens per example (longer ones are dropped)"})
    packing: bool = field(default=False, metadata={"help": "pack examples into rows (position-id resets)"})
    eval_fraction: float = field(default=0.05, metadata={"help": "held-out share of the examples"})
    seed: int = field(default=0, metadata={"help": "split, order and tiny-model seed"})
    warmup_ratio: float = field(default=0.03, metadata={"help": "share of steps with linear warm-up"})
    lr_schedule: str = field(
        default="cosine", metadata={"help": "after warm-up", "choices": ("cosine", "constant")}
    )
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping; 0 disables it"})
    dtype: str = field(
        default="float32",
        metadata={
            "help": "compute dtype; master weights and AdamW state stay float32",
            "choices": ("float32", "bfloat16"),
        },
    )
    strategy: str = field(
        default="fsdp2",
        metadata={
            "help": "under torchrun, how the model is spread over the processes, as in training's "
            "distributed.strategy (one process trains unsharded)",
            "choices": ("fsdp2", "ddp", "deepspeed_zero2"),
        },
    )
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "recompute activations: less memory, more compute"}
    )
    checkpoint_every: int = field(
        default=100, metadata={"help": "optimizer steps between checkpoints; 0 = end only"}
    )
    keep_checkpoints: int = field(default=2, metadata={"help": "complete checkpoints kept"})
    eval_every: int = field(
        default=0, metadata={"help": "optimizer steps between held-out evaluations; 0 = end only"}
    )
    resume: bool = field(default=False, metadata={"help": "continue from the newest checkpoint in --out"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    log_with: list[str] = field(
        default_factory=list,
        metadata={
            "help": "comma-separated experiment trackers fed every step (accelerate's: tensorboard, wandb, "
            "mlflow, trackio, comet_ml, aim, clearml, dvclive, swanlab); metrics.jsonl is always written live",
            "metavar": "TRACKERS",
        },
    )
    project: str = field(default="pasodoble", metadata={"help": "project (experiment) name in the trackers"})
    run_name: str | None = field(
        default=None, metadata={"help": "run name in the trackers (default: the --out name)"}
    )


# --------------------------------------------------------------------------------------------------
# Data


@dataclass
class SFTExample:
    """One tokenized conversation: ``labels[t]`` is ``input_ids[t]`` on assistant tokens, else -100."""

    input_ids: list[int]
    labels: list[int]

    @property
    def num_targets(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


def read_chat_jsonl(path: str | Path) -> list[list[dict[str, str]]]:
    """The conversations of a chat-format JSONL file. A bad line is a UserError naming file and line."""
    path = Path(path)
    conversations = []
    for lineno, record in read_jsonl(path, "SFT data file"):
        where = f"SFT data file {path} line {lineno}"
        messages = record.get("messages")
        if not isinstance(messages, list) or len(messages) < 2:
            raise UserError(f"{where} needs a 'messages' list with a prompt and an assistant turn")
        for m in messages:
            if not (
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            ):
                raise UserError(f"{where}: every message needs string 'role' and 'content' fields")
        if messages[-1]["role"] != "assistant":
            raise UserError(
                f"{where}: the last message must have role 'assistant', got {messages[-1]['role']!r}"
            )
        conversations.append([{"role": m["role"], "content": m["content"]} for m in messages])
    if not conversations:
        raise UserError(f"SFT data file {path} holds no examples")
    return conversations


def encode_chat(messages: list[dict[str, str]], tokenizer: Any) -> SFTExample:
    """Tokenize one conversation with labels on the final assistant turn only (see the module docstring)."""
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    if not full.startswith(prompt):
        raise UserError(
            "the chat template does not render the prompt (with its generation prompt) as a prefix of the "
            "whole conversation, so assistant tokens cannot be located; use a tokenizer whose template does"
        )
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]
    # The target ends at the first stop token the rollouts stop at: the template's end of turn
    # (<|im_end|>; a base model's EOS is <|endoftext|>, which follows it) or the EOS.
    from pasodoble.rollout.base import end_of_turn_ids

    turn_end = end_of_turn_ids(tokenizer)
    eos = tokenizer.eos_token_id
    stops = set(turn_end) | ({eos} if eos is not None else set())
    end = next((i + 1 for i, t in enumerate(answer_ids) if t in stops), None)
    if end is not None:
        answer_ids = answer_ids[:end]
    elif turn_end or eos is not None:
        answer_ids = [*answer_ids, turn_end[0] if turn_end else eos]
    return SFTExample(list(prompt_ids) + list(answer_ids), [IGNORE] * len(prompt_ids) + list(answer_ids))


def pad_batch(examples: list[SFTExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` of shape [B, L]."""
    L = max(len(e.input_ids) for e in examples)
    ids_BL = torch.full((len(examples), L), pad_id, dtype=torch.long)
    mask_BL = torch.zeros((len(examples), L), dtype=torch.long)
    labels_BL = torch.full((len(examples), L), IGNORE, dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids_BL[i, :n] = torch.tensor(e.input_ids)
        mask_BL[i, :n] = 1
        labels_BL[i, :n] = torch.tensor(e.labels)
    return {"input_ids": ids_BL, "attention_mask": mask_BL, "labels": labels_BL}


def pack_rows(examples: list[SFTExample], max_length: int) -> list[list[SFTExample]]:
    """Group examples into rows of at most ``max_length`` tokens, first fit in the given order."""
    rows: list[list[SFTExample]] = []
    sizes: list[int] = []
    for e in examples:
        n = len(e.input_ids)
        for i, size in enumerate(sizes):
            if size + n <= max_length:
                rows[i].append(e)
                sizes[i] += n
                break
        else:
            rows.append([e])
            sizes.append(n)
    return rows


def packed_batch(rows: list[list[SFTExample]], pad_id: int) -> dict[str, torch.Tensor]:
    """Packed rows: ``input_ids``, ``position_ids`` (restarting at 0 per example and for the padding)
    and ``labels`` of shape [R, L]; no attention mask (the position resets delimit the examples)."""
    L = max(sum(len(e.input_ids) for e in row) for row in rows)
    ids_RL = torch.full((len(rows), L), pad_id, dtype=torch.long)
    pos_RL = torch.zeros((len(rows), L), dtype=torch.long)
    labels_RL = torch.full((len(rows), L), IGNORE, dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for e in row:
            n = len(e.input_ids)
            ids_RL[r, at : at + n] = torch.tensor(e.input_ids)
            pos_RL[r, at : at + n] = torch.arange(n)
            labels_RL[r, at : at + n] = torch.tensor(e.labels)
            at += n
        pos_RL[r, at:] = torch.arange(L - at)
    return {"input_ids": ids_RL, "position_ids": pos_RL, "labels": labels_RL}


def masked_lm_loss(logits_BLV: torch.Tensor, labels_BL: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(sum of next-token cross-entropies over positions whose target label is not -100, their count).

    The logits at position t predict token t + 1, so they are scored against ``labels[:, t + 1]``.
    """
    targets_BT = labels_BL[:, 1:]
    logits_BTV = logits_BLV[:, :-1]
    keep = targets_BT != IGNORE
    count = int(keep.sum())
    if count == 0:
        return logits_BLV.sum() * 0.0, 0
    loss = F.cross_entropy(logits_BTV[keep].float(), targets_BT[keep], reduction="sum")
    return loss, count


def _forward_loss(model, batch: dict[str, torch.Tensor], device) -> tuple[torch.Tensor, int]:
    batch = {k: v.to(device) for k, v in batch.items()}
    labels = batch.pop("labels")
    out = model(**batch, use_cache=False)
    return masked_lm_loss(out.logits, labels)


def _micro_batches(examples: list[SFTExample], cfg: SFTConfig, pad_id: int) -> list[dict[str, torch.Tensor]]:
    if cfg.packing:
        rows = pack_rows(examples, cfg.max_length)
        return [
            packed_batch(rows[i : i + cfg.micro_batch_size], pad_id)
            for i in range(0, len(rows), cfg.micro_batch_size)
        ]
    ordered = sorted(examples, key=lambda e: len(e.input_ids))  # less padding per micro-batch
    return [
        pad_batch(ordered[i : i + cfg.micro_batch_size], pad_id)
        for i in range(0, len(ordered), cfg.micro_batch_size)
    ]


@torch.no_grad()
def heldout_loss(model, examples: list[SFTExample], cfg: SFTConfig, pad_id: int, device) -> float | None:
    """Token-mean cross-entropy on the assistant tokens of ``examples`` (None when there are none)."""
    if not examples:
        return None
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in _micro_batches(examples, cfg, pad_id):
        loss, n = _forward_loss(model, batch, device)
        total += float(loss)
        count += n
    model.train(was_training)
    return total / max(count, 1)


def _fingerprint(examples: list[SFTExample]) -> str:
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps([e.input_ids, e.labels]).encode())
    return h.hexdigest()[:16]


def split_examples(
    examples: list[SFTExample], eval_fraction: float, seed: int
) -> tuple[list[SFTExample], list[SFTExample]]:
    """(train, held-out): a seeded shuffle, the first ``ceil(fraction * n)`` (at least 1 when > 0) held out."""
    order = np.random.default_rng([seed, 7919]).permutation(len(examples))
    n_eval = 0 if eval_fraction <= 0 else max(1, math.ceil(eval_fraction * len(examples)))
    n_eval = min(n_eval, len(examples) - 1)
    held = [examples[int(i)] for i in order[:n_eval]]
    train = [examples[int(i)] for i in order[n_eval:]]
    return train, held


# --------------------------------------------------------------------------------------------------
# Training


def _validate(cfg: SFTConfig) -> None:
    from pasodoble.config import MAX_SEED

    for f in fields(cfg):  # no option takes inf or nan (inf --lr wrote non-finite weights)
        value = getattr(cfg, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"--{f.name.replace('_', '-')} must be a finite number; got {value}")
    checks = [
        (0 <= cfg.seed <= MAX_SEED, f"--seed must be in 0..{MAX_SEED} (2^32 - 1); got {cfg.seed}"),
        (cfg.weight_decay >= 0, f"--weight-decay must be >= 0; got {cfg.weight_decay}"),
        (
            cfg.max_grad_norm >= 0,
            f"--max-grad-norm must be >= 0 (0 disables clipping); got {cfg.max_grad_norm}",
        ),
        (cfg.role in ROLES, f"--role must be proposer or solver; got {cfg.role!r}"),
        (cfg.epochs > 0, f"--epochs must be > 0; got {cfg.epochs}"),
        (cfg.lr > 0, f"--lr must be > 0; got {cfg.lr}"),
        (cfg.batch_size >= 1, f"--batch-size must be >= 1; got {cfg.batch_size}"),
        (cfg.micro_batch_size >= 1, f"--micro-batch-size must be >= 1; got {cfg.micro_batch_size}"),
        (cfg.max_length >= 2, f"--max-length must be >= 2; got {cfg.max_length}"),
        (0 <= cfg.eval_fraction < 1, f"--eval-fraction must be in [0, 1); got {cfg.eval_fraction}"),
        (0 <= cfg.warmup_ratio < 1, f"--warmup-ratio must be in [0, 1); got {cfg.warmup_ratio}"),
        (
            cfg.lr_schedule in ("cosine", "constant"),
            f"--lr-schedule must be cosine or constant; got {cfg.lr_schedule!r}",
        ),
        (cfg.checkpoint_every >= 0, f"--checkpoint-every must be >= 0; got {cfg.checkpoint_every}"),
        (cfg.dtype in ("float32", "bfloat16"), f"--dtype must be float32 or bfloat16; got {cfg.dtype!r}"),
        (
            cfg.strategy in ("fsdp2", "ddp", "deepspeed_zero2"),
            f"--strategy must be fsdp2, ddp or deepspeed_zero2; got {cfg.strategy!r}",
        ),
        (bool(cfg.out), "--out is required"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)


def sft_step(trainable: Trainable, examples: list[SFTExample], cfg: SFTConfig, pad_id: int) -> float:
    """One optimizer step on a step's ``examples`` (every process holds them all and trains on its share,
    ``rank::world``); returns the token-mean loss over the assistant tokens of the whole step."""
    acc, device = trainable.accelerator, trainable.device
    rank, world = acc.process_index, acc.num_processes
    mine = examples[rank::world]
    local_tokens = sum(e.num_targets for e in mine)
    tokens = int(acc.reduce(torch.tensor(local_tokens, device=device), reduction="sum"))
    micros = _micro_batches(mine, cfg, pad_id) if mine else []
    # every process runs as many micro-batches as the busiest (zero-weight passes), so the sharded
    # collectives of FSDP2 and DeepSpeed stay in step; the filler is any example of the step
    n_micro = trainable.max_over_processes(len(micros))
    filler = pad_batch(examples[:1], pad_id)
    loss_sum = 0.0
    for j in range(n_micro):
        micro, weight = (micros[j], 1.0) if j < len(micros) else (filler, 0.0)
        with trainable.micro_batch(last=j == n_micro - 1):
            with trainable.autocast():
                loss, _ = _forward_loss(trainable.model, micro, device)
            # the token mean over the whole step; gradients are averaged over processes: undo it
            trainable.backward(loss * (weight * world / max(tokens, 1)))
        loss_sum += float(loss.detach()) * weight
    trainable.clip_and_step()
    return float(acc.reduce(torch.tensor(loss_sum, device=device), reduction="sum")) / max(tokens, 1)


def train_sft(
    cfg: SFTConfig, *, on_eval: Callable[[Any, Any, int], dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Fine-tune ``cfg.model`` on ``cfg.data``; write the HF model directory ``cfg.out``; return a summary.

    ``on_eval(model, tokenizer, step)``, when given, runs at every held-out evaluation (each
    ``eval_every`` steps, before training and at the end) and its dict is added to that step's
    ``metrics.jsonl`` record (the toy build measures the Solver's accuracy this way).

    The summary (also written to ``OUT/sft_summary.json``) holds the held-out loss before and after
    training, the last training loss, step and example counts and the dropped (too long) examples.
    """
    from tqdm import tqdm

    from pasodoble import distributed as dist
    from pasodoble.checkpoint import (
        latest_checkpoint,
        load_rng,
        read_checkpoint_state,
        save_collective,
        verify_checkpoint,
    )
    from pasodoble.config import ModelConfig
    from pasodoble.metrics import RunLogger
    from pasodoble.models import load_model_and_tokenizer
    from pasodoble.parallel import build_accelerator
    from pasodoble.trainable import Trainable, same_layout

    _validate(cfg)
    started = time.perf_counter()
    out = Path(cfg.out)
    conversations = read_chat_jsonl(cfg.data)
    # float32 master weights; cfg.dtype is the compute dtype (trainable.py)
    model, tokenizer = load_model_and_tokenizer(
        cfg.model, ModelConfig(dtype=cfg.dtype), seed=cfg.seed, dtype="float32", field="--model"
    )
    encoded = [encode_chat(m, tokenizer) for m in conversations]
    examples = [e for e in encoded if len(e.input_ids) <= cfg.max_length and e.num_targets > 0]
    dropped = len(encoded) - len(examples)
    if not examples:
        raise UserError(
            f"no example of {cfg.data} fits --max-length {cfg.max_length} tokens; raise --max-length"
        )
    train, held = split_examples(examples, cfg.eval_fraction, cfg.seed)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    accelerator, par = build_accelerator(cfg.strategy, cfg.dtype, cpu=not torch.cuda.is_available())
    if on_eval is not None and accelerator.num_processes > 1:
        raise UserError(
            "on_eval (the toy build's accuracy curve) runs in one process only; launch without torchrun"
        )
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total_steps = max(1, math.ceil(cfg.epochs * steps_per_epoch))
    trainable = Trainable(
        model,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        lr_schedule=cfg.lr_schedule,
        warmup_steps=int(cfg.warmup_ratio * total_steps),
        total_steps=total_steps,
        micro_batch_size=cfg.micro_batch_size,
        gradient_checkpointing=cfg.gradient_checkpointing,
        accelerator=accelerator,
        parallelism=par,
        label="sft",
    )
    unwrapped = trainable.unwrapped_model
    if accelerator.is_main_process:  # no silent fallback: the layout in use, on one line
        print(f"pasodoble sft train: {par.describe()}", file=sys.stderr, flush=True)

    def heldout() -> float | None:
        with trainable.autocast():
            return heldout_loss(trainable.model, held, cfg, pad_id, trainable.device)

    fingerprint = _fingerprint(examples)
    step, epoch, position = 0, 0, 0
    eval_before = None
    history: list[dict[str, Any]] = []
    ckpt = latest_checkpoint(out) if cfg.resume else None
    if cfg.resume and ckpt is None and not (out / "checkpoints").exists():
        raise UserError(f"--resume: no checkpoint in {out}; start without --resume")
    if ckpt is not None:
        dist.main_then_broadcast(lambda: verify_checkpoint(ckpt))  # every file against its sha256
        state = read_checkpoint_state(ckpt)["state"]
        if state["fingerprint"] != fingerprint:
            raise UserError(
                f"--resume: {cfg.data} (or --max-length/--model) differs from the run in {out}; "
                "resume with the same data and settings"
            )
        if not same_layout(state.get("strategy", "none"), par.strategy):
            raise UserError(
                f"--resume: {out} was written with --strategy {state.get('strategy')} and this launch uses "
                f"{par.strategy}; resume with the strategy it was written with"
            )
        trainable.load(ckpt, "sft")
        load_rng(ckpt)
        step, epoch, position = state["step"], state["epoch"], state["position"]
        eval_before = state["eval_loss_before"]
        history = state["history"]
    elif accelerator.is_main_process and out.exists() and (out / "checkpoints").exists() and not cfg.resume:
        raise UserError(f"{out} already holds an SFT run; pass --resume to continue it or pick another --out")

    # Live logs: metrics.jsonl holds the history so far (a resumed run's comes from its checkpoint) and
    # grows by a line each step; the trackers get the same records.
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.jsonl").write_text("".join(json.dumps(rec) + "\n" for rec in history))
    logger = RunLogger(
        out,
        enabled=accelerator.is_main_process,
        trackers=cfg.log_with,
        project=cfg.project,
        run_name=cfg.run_name,
        config=asdict(cfg),
        resume=ckpt is not None,
        rollouts=False,
        field="--log-with",
    )
    if ckpt is not None:
        logger.restore({"step": step + 1})  # TensorBoard drops what a killed run logged after the checkpoint

    def log(record: dict[str, Any]) -> None:
        logger.log_metrics(record["step"], {k: v for k, v in record.items() if k != "step"})

    if eval_before is None:
        eval_before = heldout()
        if on_eval is not None:
            history.append({"step": 0, "eval_loss": eval_before, **on_eval(unwrapped, tokenizer, 0)})
            log(history[-1])

    def save(at_step: int) -> None:
        """Every process: its share of the model and optimizer (sft.pt, sft.dcp/ or sft.deepspeed/)."""
        save_collective(
            out,
            at_step,
            write=lambda tmp: trainable.save(tmp, "sft"),
            state=lambda: {
                "step": at_step,
                "epoch": epoch,
                "position": position,
                "fingerprint": fingerprint,
                "eval_loss_before": eval_before,
                "history": history,
                "config": asdict(cfg),
                "strategy": par.strategy,
            },
            keep=cfg.keep_checkpoints,
        )

    bar = tqdm(
        total=total_steps,
        initial=step,
        desc=f"sft {cfg.role}",
        unit="step",
        dynamic_ncols=True,
        disable=not (cfg.progress and accelerator.is_main_process),
    )
    last_loss = None
    order = np.random.default_rng([cfg.seed, epoch]).permutation(len(train))
    while step < total_steps:
        if position >= len(train):
            epoch, position = epoch + 1, 0
            order = np.random.default_rng([cfg.seed, epoch]).permutation(len(train))
        batch_examples = [train[int(i)] for i in order[position : position + cfg.batch_size]]
        position += len(batch_examples)
        last_loss = sft_step(trainable, batch_examples, cfg, pad_id)
        step += 1
        record: dict[str, Any] = {
            "step": step,
            "loss": last_loss,
            "lr": trainable.lr,
            "epoch": epoch,
        }
        if cfg.eval_every and step % cfg.eval_every == 0 and step < total_steps:
            record["eval_loss"] = heldout()
            if on_eval is not None:
                record.update(on_eval(unwrapped, tokenizer, step))
        history.append(record)
        log(record)
        bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{record['lr']:.2e}")
        bar.update(1)
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < total_steps:
            save(step)
    bar.close()

    eval_after = heldout()
    final: dict[str, Any] = {"eval_loss": eval_after}
    if on_eval is not None and history and history[-1]["step"] == step:
        final.update(on_eval(unwrapped, tokenizer, step))
        history[-1].update(final)
    logger.log_metrics(step, final, trackers_only=True)  # metrics.jsonl is rewritten whole below
    logger.close()
    save(step)
    summary = {
        "role": cfg.role,
        "model": cfg.model,
        "data": str(cfg.data),
        "examples": len(encoded),
        "train_examples": len(train),
        "eval_examples": len(held),
        "dropped_too_long": dropped,
        "steps": step,
        "epochs": cfg.epochs,
        "eval_loss_before": eval_before,
        "eval_loss_after": eval_after,
        "train_loss_last": last_loss
        if last_loss is not None
        else (history[-1].get("loss") if history else None),
        "seconds": round(time.perf_counter() - started, 2),
    }
    trainable.save_pretrained(out, tokenizer)  # a collective under FSDP2
    if accelerator.is_main_process:
        (out / "sft_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        with open(out / "metrics.jsonl", "w", encoding="utf-8") as fh:
            for rec in history:
                fh.write(json.dumps(rec) + "\n")
    accelerator.wait_for_everyone()
    return summary
