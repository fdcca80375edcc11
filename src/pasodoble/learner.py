"""One GRPO learner class for both roles: the loss, batching and metrics over a ``Trainable``.

``Learner.update(samples)`` takes this process's share of one logical batch of ``TrainSample``s
(prompt ids, completion ids, advantage) and makes ``steps_per_batch`` optimizer steps on it (1 by
default: exactly one step per batch). Within a step, gradients accumulate over micro-batches of
``micro_batch_size`` sequences, and the loss normalizers (sequence and token counts) are those of the
whole logical batch summed over all processes, so that accumulation and data parallelism reproduce
the single-process full-batch gradient (see ``docs/learner.md``).

The model, AdamW, the schedule and everything that depends on the layout (one process, DDP, FSDP2,
DeepSpeed ZeRO-2: accumulation, clipping, stepping, saving, precision, LoRA adapters) live in
``trainable.Trainable``, the layer the SFT loop shares; this module holds only GRPO.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator

from pasodoble import lora
from pasodoble.config import GRPOConfig, RoleConfig
from pasodoble.grpo import completion_logprobs, pack_sequences, policy_loss
from pasodoble.parallel import Parallelism
from pasodoble.trainable import Trainable


@dataclass
class TrainSample:
    """One completion to learn from.

    ``old_logprobs`` are the per-token log-probabilities under the policy that sampled it (e.g. the
    rollout backend's); None lets the learner use the current policy's (ratio 1, exact gradient).
    ``truncated`` marks a completion stopped by max_new_tokens (see ``grpo.mask_truncated``).
    """

    prompt_ids: list[int]
    completion_ids: list[int]
    advantage: float
    old_logprobs: list[float] | None = None
    truncated: bool = False


LEARNER_FORMAT = 2  # the layout of R.pt (see Learner.save)

_WEIGHTED_METRICS = ("clip_frac", "clip_frac_low", "clip_frac_high", "ratio_mean", "kl", "entropy")


class Learner:
    """GRPO policy learner for one role (``role`` only labels errors; metric keys carry no prefix).

    Args:
        role: 'proposer' or 'solver' (any label).
        model: the causal LM to train (not yet wrapped); ``Trainable`` prepares it for the layout.
        tokenizer: saved next to the model by ``save_pretrained``; its pad id pads batches.
        role_cfg: optimizer, schedule and batching settings of this role.
        grpo_cfg: loss settings shared by both roles.
        accelerator: an ``accelerate.Accelerator`` (default: a new one; CPU when no GPU is present).
        temperature: the sampling temperature; logits are divided by it, as when sampling.
        max_new_tokens: generation cap; the dr_grpo constant when ``grpo_cfg.loss_constant`` is null.
        total_steps: optimizer steps of the run, needed by the cosine schedule.
        ref_model: frozen reference policy for ``beta > 0`` (default: a copy of ``model`` as given).
            ``model`` may be a ``peft.PeftModel`` (``lora.wrap``): then only its adapters are trained
            and saved (see the module docstring).
        gradient_checkpointing: recompute activations in backward (less memory, more compute).
        compute_entropy: report the mean token entropy (one extra softmax per row, no gradient).
        parallelism: strategy and compute dtype (``parallel.build_accelerator`` returns it with the
            accelerator); default: what ``accelerator`` implies (one process, DDP or DeepSpeed), float32.
    """

    def __init__(
        self,
        role: str,
        model: torch.nn.Module,
        tokenizer,
        role_cfg: RoleConfig,
        grpo_cfg: GRPOConfig,
        accelerator: Accelerator | None = None,
        *,
        temperature: float,
        max_new_tokens: int,
        total_steps: int | None = None,
        ref_model: torch.nn.Module | None = None,
        gradient_checkpointing: bool = False,
        compute_entropy: bool = True,
        parallelism: Parallelism | None = None,
    ) -> None:
        if temperature <= 0:
            raise ValueError(f"{role}: temperature must be > 0; got {temperature}")
        self.role = role
        self.tokenizer = tokenizer
        self.role_cfg = role_cfg
        self.grpo_cfg = grpo_cfg
        self.temperature = float(temperature)
        self.max_new_tokens = int(max_new_tokens)
        self.compute_entropy = compute_entropy
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise ValueError(f"{role}: the tokenizer has neither a pad nor an eos token")
        self.pad_token_id = int(pad)
        self.step = 0
        # The frozen reference policy is copied before the layer upcasts, shards or checkpoints the model
        # (its values are the same: a 16-bit weight upcast to float32 and cast to the compute dtype is
        # the 16-bit weight cast to it).
        ref = None
        if grpo_cfg.beta > 0:
            base = model.get_base_model() if lora.is_peft_model(model) else model
            ref = ref_model if ref_model is not None else copy.deepcopy(base)
        self.trainable = Trainable(
            model,
            lr=role_cfg.learning_rate,
            betas=(role_cfg.adam_beta1, role_cfg.adam_beta2),
            weight_decay=role_cfg.weight_decay,
            max_grad_norm=role_cfg.max_grad_norm,
            lr_schedule=role_cfg.lr_schedule,
            warmup_steps=role_cfg.warmup_steps,
            total_steps=total_steps,
            micro_batch_size=role_cfg.micro_batch_size,
            gradient_checkpointing=gradient_checkpointing,
            accelerator=accelerator,
            parallelism=parallelism,
            label=role,
        )
        # The layer's parts under their usual names (fork.py and the tests read them; never reassigned)
        t = self.trainable
        self.model, self.optimizer, self.scheduler = t.model, t.optimizer, t.scheduler
        self.accelerator, self.parallelism, self.peft_model = t.accelerator, t.parallelism, t.peft_model
        self.ref_model = None
        if ref is not None:  # frozen, in the compute dtype, whole on every process (no collective)
            ref.requires_grad_(False)
            self.ref_model = ref.eval().to(device=t.device, dtype=t.parallelism.compute_dtype)

    # ----------------------------------------------------------------------------------------------
    # Properties

    @property
    def unwrapped_model(self) -> torch.nn.Module:
        """The bare transformers model (for generation and saving); shares weights with training."""
        return self.trainable.unwrapped_model

    @property
    def loss_constant(self) -> int:
        c = self.grpo_cfg.loss_constant
        return int(c) if c is not None else self.max_new_tokens

    # ----------------------------------------------------------------------------------------------
    # Log-probabilities

    @torch.no_grad()
    def logprobs(self, samples: list[TrainSample]) -> list[list[float]]:
        """Per-token log-probabilities of each sample's completion under the current policy.

        Under FSDP2 every process must call this (with its own samples, possibly none): the sharded
        forward is a collective, so processes with fewer micro-batches run zero-length extra passes.
        """
        # Without gradients no all-reduce is needed: use the bare model (a DDP forward may broadcast
        # buffers, a collective that ranks with different batch sizes would not match). FSDP2 shards
        # the parameters, so there the sharded model (and equal call counts on all ranks) is needed.
        sharded = self.trainable.sharded
        model = self.model if sharded else self.unwrapped_model
        out: list[list[float]] = []
        mbs = self.role_cfg.micro_batch_size
        n_micro = self._max_micro_batches(len(samples)) if sharded else math.ceil(len(samples) / mbs)
        for j in range(n_micro):
            micro = samples[j * mbs : (j + 1) * mbs]
            if not micro:  # keeps this rank's collectives in step with the others'
                self._forward(model, self._filler(), with_entropy=False)
                continue
            logps_BT, _ = self._forward(model, micro, with_entropy=False)
            for i, s in enumerate(micro):
                out.append(logps_BT[i, : len(s.completion_ids)].float().tolist())
        return out

    def _max_micro_batches(self, n_samples: int) -> int:
        """The largest micro-batch count over all processes (a collective)."""
        return self.trainable.max_over_processes(math.ceil(n_samples / self.role_cfg.micro_batch_size))

    def _filler(self) -> list[TrainSample]:
        """A one-token sample for the zero-weight passes of a process that ran out of micro-batches."""
        return [TrainSample([self.pad_token_id], [self.pad_token_id], 0.0)]

    def _forward(self, model, micro: list[TrainSample], *, with_entropy: bool):
        batch = pack_sequences(
            [s.prompt_ids for s in micro], [s.completion_ids for s in micro], self.pad_token_id
        ).to(self.accelerator.device)
        with self.trainable.autocast():
            return completion_logprobs(model, batch, self.temperature, with_entropy=with_entropy)

    # ----------------------------------------------------------------------------------------------
    # Update

    def shard(self, samples: list[TrainSample]) -> list[TrainSample]:
        """This process's share of a logical batch that every process holds in full.

        The batch is cut into ``steps_per_batch`` consecutive mini-batches and each process takes a
        contiguous share of every mini-batch, so that the j-th optimizer step of every rank trains on
        the j-th mini-batch of a single-process run (exactly so when the batch size is divisible by
        ``steps_per_batch * num_processes``).
        """
        n, r = self.accelerator.num_processes, self.accelerator.process_index
        out: list[TrainSample] = []
        for part in _split(samples, self.role_cfg.steps_per_batch):
            out.extend(_split(part, n)[r])
        return out

    def update(self, samples: list[TrainSample]) -> dict[str, float]:
        """Train on this process's share of one logical batch; return metrics (no role prefix).

        Makes ``steps_per_batch`` optimizer steps on consecutive equal parts of ``samples``. With
        more than one step, missing ``old_logprobs`` are computed first, so later steps are
        importance-weighted against the policy that sampled the batch.
        """
        k = self.role_cfg.steps_per_batch
        if len(samples) < k:
            raise ValueError(
                f"{self.role}: {len(samples)} samples on process {self.accelerator.process_index} cannot "
                f"make {k} optimizer steps (steps_per_batch); give each process >= {k} samples"
            )
        if k > 1 and any(s.old_logprobs is None for s in samples):
            fresh = self.logprobs(samples)
            samples = [
                s if s.old_logprobs is not None else _with_old(s, lp)
                for s, lp in zip(samples, fresh, strict=True)
            ]
        step_metrics = [self._optimizer_step(part) for part in _split(samples, k)]
        metrics = {key: sum(m[key] for m in step_metrics) / k for key in step_metrics[0]}
        for key in ("tokens", "sequences"):
            metrics[key] = sum(m[key] for m in step_metrics)
        metrics["optimizer_steps"] = float(k)
        metrics["step"] = float(self.step)
        return metrics

    def _optimizer_step(self, samples: list[TrainSample]) -> dict[str, float]:
        acc, g = self.accelerator, self.grpo_cfg
        device = acc.device
        mbs = self.role_cfg.micro_batch_size
        eff_lens = [0 if (g.mask_truncated and s.truncated) else len(s.completion_ids) for s in samples]
        local = torch.tensor(
            [
                len(samples),
                sum(eff_lens),
                sum(len(s.completion_ids) for s in samples),
                sum(s.truncated for s in samples),
                sum(s.advantage for s in samples),
            ],
            dtype=torch.float64,
            device=device,
        )
        glob = acc.reduce(local, reduction="sum") if acc.num_processes > 1 else local
        n_seq, n_tok, n_comp_tok, n_trunc, adv_sum = glob.tolist()
        n_micro = self._max_micro_batches(len(samples))
        scale = float(acc.num_processes)  # DDP, FSDP2 and DeepSpeed average gradients over ranks; undo it.

        sums = {key: torch.zeros((), device=device, dtype=torch.float64) for key in _WEIGHTED_METRICS}
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        tokens_seen = torch.zeros((), device=device, dtype=torch.float64)
        for j in range(n_micro):
            micro = samples[j * mbs : (j + 1) * mbs]
            weight = 1.0
            if not micro:  # this rank has fewer micro-batches: a zero-weight pass keeps collectives in step
                micro, weight = (samples[:1] or self._filler()), 0.0
            with self.trainable.micro_batch(last=j == n_micro - 1):
                loss, m = self._micro_loss(micro, n_seq, n_tok)
                self.trainable.backward(loss * (scale * weight))
            loss_sum += loss.detach().double() * weight
            w = m["tokens"].double() * weight
            tokens_seen += w
            for key in _WEIGHTED_METRICS:
                if key in m:
                    sums[key] += m[key].double() * w

        lr = self.trainable.lr
        grad_norm = self.trainable.clip_and_step()
        self.step += 1

        packed = torch.stack([loss_sum, tokens_seen, *[sums[k] for k in _WEIGHTED_METRICS]])
        if acc.num_processes > 1:
            packed = acc.reduce(packed, reduction="sum")
        vals = packed.tolist()
        denom = max(vals[1], 1.0)
        metrics = {
            "loss": vals[0],
            "grad_norm": grad_norm,
            "lr": float(lr),
            "tokens": n_tok,
            "sequences": n_seq,
            "completion_len_mean": n_comp_tok / max(n_seq, 1.0),
            "truncated_frac": n_trunc / max(n_seq, 1.0),
            "advantage_mean": adv_sum / max(n_seq, 1.0),
        }
        for key, val in zip(_WEIGHTED_METRICS, vals[2:], strict=True):
            if key == "kl" and self.ref_model is None:
                continue
            if key == "entropy" and not self.compute_entropy:
                continue
            metrics[key] = val / denom
        return metrics

    def _micro_loss(self, micro: list[TrainSample], n_seq: float, n_tok: float):
        g = self.grpo_cfg
        logps_BT, ent_BT = self._forward(self.model, micro, with_entropy=self.compute_entropy)
        B, T = logps_BT.shape
        device = logps_BT.device
        if all(s.old_logprobs is None for s in micro):
            old_BT = logps_BT.detach()
        else:
            old_BT = torch.zeros((B, T), dtype=torch.float32, device=device)
            for i, s in enumerate(micro):
                if s.old_logprobs is None:
                    old_BT[i] = logps_BT[i].detach()
                else:
                    if len(s.old_logprobs) != len(s.completion_ids):
                        raise ValueError(
                            f"{self.role}: old_logprobs has {len(s.old_logprobs)} entries for "
                            f"{len(s.completion_ids)} completion tokens"
                        )
                    old_BT[i, : len(s.old_logprobs)] = torch.tensor(s.old_logprobs, dtype=torch.float32)
        ref_BT = None
        if self.ref_model is not None:
            with torch.no_grad():
                ref_BT, _ = self._forward(self.ref_model, micro, with_entropy=False)
        mask_BT = (
            torch.arange(T, device=device)[None, :]
            < torch.tensor([len(s.completion_ids) for s in micro], device=device)[:, None]
        ).float()
        return policy_loss(
            logps_BT,
            old_BT,
            torch.tensor([s.advantage for s in micro], dtype=torch.float32, device=device),
            mask_BT,
            loss_type=g.loss_type,
            eps_low=g.epsilon_low,
            eps_high=g.epsilon_high,
            beta=g.beta,
            ref_logprobs_BT=ref_BT,
            loss_constant=self.loss_constant,
            truncated_B=torch.tensor([s.truncated for s in micro], device=device),
            mask_truncated=g.mask_truncated,
            entropy_BT=ent_BT,
            num_sequences=n_seq,
            num_tokens=n_tok,
        )

    # ----------------------------------------------------------------------------------------------
    # State

    def state_dict(self) -> dict:
        """Model, optimizer, scheduler and step: everything an exact resume needs (unsharded layouts).

        Tensors are live references: ``torch.save`` the result (or deep-copy it) before the next update.
        Sharded (FSDP2) and DeepSpeed learners have no in-memory full state: use ``save``/``load``.
        """
        return {**self._meta(), "step": self.step, **self.trainable.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned; the next ``update`` continues bit for bit."""
        self.trainable.load_state_dict(state)
        self.step = int(state["step"])

    def save(self, directory: str | Path) -> None:
        """Write this role's resumable state into ``directory``; every process calls it.

        Files (``R`` = the role; ``Trainable.save``): ``R.pt`` (format, layout, role, step, scheduler and,
        for one process or DDP, the float32 model and the optimizer state), plus ``R.dcp/`` under FSDP2
        or ``R.deepspeed/`` under DeepSpeed.
        """
        self.trainable.save(directory, self.role, {**self._meta(), "step": self.step})

    def load(self, directory: str | Path) -> None:
        """Restore what ``save`` wrote (every process calls it); the next ``update`` continues bit for bit.

        Raises ``ValueError`` when the files were written under another strategy.
        """
        self.step = int(self.trainable.load(directory, self.role)["step"])

    def _meta(self) -> dict:
        return {"format": LEARNER_FORMAT, "layout": self.parallelism.strategy, "role": self.role}

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The float32 model weights, whole, on the main process ({} elsewhere); every process calls it.

        With LoRA: the merged weights under the base model's names (``lora.merged_state_items``).
        """
        return self.trainable.full_state_dict()

    def save_pretrained(self, directory: str | Path) -> None:
        """Write a Hugging Face model directory (weights, config, tokenizer) from the main process."""
        self.trainable.save_pretrained(directory, self.tokenizer)


def _split(items: list, parts: int) -> list[list]:
    """``items`` in ``parts`` consecutive pieces whose sizes differ by at most one (larger first)."""
    per, extra = divmod(len(items), parts)
    out, start = [], 0
    for j in range(parts):
        size = per + (1 if j < extra else 0)
        out.append(items[start : start + size])
        start += size
    return out


def _with_old(sample: TrainSample, old: list[float]) -> TrainSample:
    return TrainSample(sample.prompt_ids, sample.completion_ids, sample.advantage, old, sample.truncated)
