"""One GRPO learner class for both roles: model, AdamW, LR schedule, accumulation, accelerate.

``Learner.update(samples)`` takes this process's share of one logical batch of ``TrainSample``s
(prompt ids, completion ids, advantage) and makes ``steps_per_batch`` optimizer steps on it (1 by
default: exactly one step per batch). Within a step, gradients accumulate over micro-batches of
``micro_batch_size`` sequences, and the loss normalizers (sequence and token counts) are those of the
whole logical batch summed over all processes, so that accumulation and data parallelism reproduce
the single-process full-batch gradient (see ``docs/learner.md``).

The same code runs single-process on CPU, data-parallel under ``torchrun`` (DDP; the gradient
all-reduce averages over ranks, so each rank's loss is multiplied by the world size), sharded with
FSDP2 (applied here, ``parallel.shard_model``; CPU and GPU alike) or under DeepSpeed ZeRO-2 as
configured in the ``Accelerator`` the caller passes in.

Precision: master weights and AdamW state are float32 whatever the compute dtype (16-bit parameters
are upcast when the learner is built); ``Parallelism.compute_dtype`` is what the forward computes in
(``parallel.py`` says how each strategy realizes it).

LoRA (``lora.py``): given a ``peft.PeftModel``, the learner trains the transformers model peft
injected its adapters into (only the adapters require gradients, so AdamW holds only theirs), and
its state and checkpoints hold the adapters and their optimizer state only; ``full_state_dict`` and
``save_pretrained`` give the merged full model.
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from transformers import get_scheduler

from pasodoble import lora
from pasodoble.config import GRPOConfig, RoleConfig
from pasodoble.grpo import completion_logprobs, pack_sequences, policy_loss
from pasodoble.parallel import (
    Parallelism,
    deepspeed_checkpoint_classes,
    full_model_state,
    load_sharded_state,
    save_sharded_state,
    shard_model,
    upcast_master,
    weights_only_loads,
)


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
        model: the causal LM to train (not yet wrapped); it is prepared with ``accelerator``.
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
        self.accelerator = (
            accelerator if accelerator is not None else Accelerator(cpu=not torch.cuda.is_available())
        )
        self.parallelism = parallelism if parallelism is not None else _implied(self.accelerator)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise ValueError(f"{role}: the tokenizer has neither a pad nor an eos token")
        self.pad_token_id = int(pad)
        self.step = 0
        self._fsdp = self.parallelism.strategy == "fsdp2"
        self._deepspeed = self.accelerator.distributed_type == DistributedType.DEEPSPEED
        if self._fsdp and self._deepspeed:
            raise ValueError(f"{role}: an FSDP2 layout with a DeepSpeed accelerator")

        # LoRA: keep peft's handle for the adapter state; train the transformers model it adapted in place
        self.peft_model = None
        if lora.is_peft_model(model):
            lora.check_layout(self.parallelism.strategy, self.parallelism.num_processes)
            self.peft_model, model = model, model.get_base_model()
        upcast_master(model)
        device = self.accelerator.device
        self.ref_model = None
        if grpo_cfg.beta > 0:
            # Frozen: held in the compute dtype, whole on every process (its forward issues no collective).
            ref = ref_model if ref_model is not None else copy.deepcopy(model)
            ref.requires_grad_(False)
            self.ref_model = ref.eval().to(device=device, dtype=self.parallelism.compute_dtype)

        if gradient_checkpointing:
            # The only activation checkpointing applied (FSDP2 here adds none of its own).
            ckpt_kwargs = {"use_reentrant": False}
            if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x
                model.activation_checkpointing_enable(activation_checkpointing_kwargs=ckpt_kwargs)
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=ckpt_kwargs)
        if self._fsdp:
            shard_model(model, self.parallelism, device)
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],
            lr=role_cfg.learning_rate,
            betas=(role_cfg.adam_beta1, role_cfg.adam_beta2),
            weight_decay=role_cfg.weight_decay,
        )
        if role_cfg.lr_schedule == "cosine":
            if total_steps is None:
                raise ValueError(
                    f"{role}: the cosine schedule needs total_steps (optimizer steps of the run)"
                )
            self.scheduler = get_scheduler(
                "cosine", optimizer, num_warmup_steps=role_cfg.warmup_steps, num_training_steps=total_steps
            )
        else:
            self.scheduler = get_scheduler(
                "constant_with_warmup", optimizer, num_warmup_steps=role_cfg.warmup_steps
            )
        # Under DeepSpeed the engine makes the optimizer step, clipping included: this learner marks
        # the accumulation boundary itself (one engine.step() per optimizer step), so DeepSpeed's own
        # accumulation must stay 1; the clip norm is this role's (read when prepare() builds the engine).
        if self._deepspeed:
            ds_config = self.accelerator.state.deepspeed_plugin.deepspeed_config
            if ds_config.get("gradient_accumulation_steps", 1) not in (1, "auto"):
                raise ValueError(
                    f"{role}: the DeepSpeed config's gradient_accumulation_steps must be 1 (the learner "
                    f"accumulates micro-batches itself); got {ds_config['gradient_accumulation_steps']}"
                )
            ds_config["gradient_clipping"] = float(role_cfg.max_grad_norm)
            if ds_config.get("train_micro_batch_size_per_gpu", "auto") == "auto":
                ds_config["train_micro_batch_size_per_gpu"] = role_cfg.micro_batch_size
        # The scheduler is not prepared: accelerate would step it once per process. Under FSDP2 the
        # model is already sharded in place and the optimizer holds its DTensor shards: nothing to wrap.
        if self._fsdp:
            self.model, self.optimizer = model, optimizer
        else:
            self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.model.train()

    # ----------------------------------------------------------------------------------------------
    # Properties

    @property
    def unwrapped_model(self) -> torch.nn.Module:
        """The bare transformers model (for generation and saving); shares weights with training."""
        return self.accelerator.unwrap_model(self.model)

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
        model = self.model if self._fsdp else self.unwrapped_model
        out: list[list[float]] = []
        mbs = self.role_cfg.micro_batch_size
        n_micro = self._max_micro_batches(len(samples)) if self._fsdp else math.ceil(len(samples) / mbs)
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
        acc = self.accelerator
        n_micro = torch.tensor([math.ceil(n_samples / self.role_cfg.micro_batch_size)], device=acc.device)
        return int(acc.reduce(n_micro, reduction="max").item()) if acc.num_processes > 1 else int(n_micro)

    def _filler(self) -> list[TrainSample]:
        """A one-token sample for the zero-weight passes of a process that ran out of micro-batches."""
        return [TrainSample([self.pad_token_id], [self.pad_token_id], 0.0)]

    def _forward(self, model, micro: list[TrainSample], *, with_entropy: bool):
        batch = pack_sequences(
            [s.prompt_ids for s in micro], [s.completion_ids for s in micro], self.pad_token_id
        ).to(self.accelerator.device)
        with self.parallelism.autocast(self.accelerator.device):
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
        scale = float(acc.num_processes)  # DDP/FSDP average gradients over ranks; undo it.

        sums = {key: torch.zeros((), device=device, dtype=torch.float64) for key in _WEIGHTED_METRICS}
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        tokens_seen = torch.zeros((), device=device, dtype=torch.float64)
        for j in range(n_micro):
            micro = samples[j * mbs : (j + 1) * mbs]
            weight = 1.0
            if not micro:  # this rank has fewer micro-batches: a zero-weight pass keeps collectives in step
                micro, weight = (samples[:1] or self._filler()), 0.0
            sync = j == n_micro - 1
            # FSDP2 reduce-scatters every micro-batch, so its gradients stay sharded (no_sync would
            # accumulate unsharded ones, 4 bytes per parameter); DDP all-reduces once, at the end.
            ctx = contextlib.nullcontext() if sync or self._fsdp else acc.no_sync(self.model)
            if self._deepspeed:
                self.model.set_gradient_accumulation_boundary(sync)
            with ctx:
                loss, m = self._micro_loss(micro, n_seq, n_tok)
                if self._deepspeed:  # acc.backward would also step the engine after every micro-batch
                    self.model.backward(loss * (scale * weight))
                else:
                    acc.backward(loss * (scale * weight))
            loss_sum += loss.detach().double() * weight
            w = m["tokens"].double() * weight
            tokens_seen += w
            for key in _WEIGHTED_METRICS:
                if key in m:
                    sums[key] += m[key].double() * w

        lr = self.scheduler.get_last_lr()[0]
        if self._deepspeed:
            self.model.step()  # clips at max_grad_norm, steps the optimizer, zeroes the gradients
            grad_norm = self.model.get_global_grad_norm()  # before clipping
        else:
            max_norm = self.role_cfg.max_grad_norm if self.role_cfg.max_grad_norm > 0 else float("inf")
            if self._fsdp:  # the norm of DTensor gradients is a DTensor: the global norm, replicated
                grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
                grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
            else:
                grad_norm = acc.clip_grad_norm_(self.model.parameters(), max_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1

        packed = torch.stack([loss_sum, tokens_seen, *[sums[k] for k in _WEIGHTED_METRICS]])
        if acc.num_processes > 1:
            packed = acc.reduce(packed, reduction="sum")
        vals = packed.tolist()
        denom = max(vals[1], 1.0)
        metrics = {
            "loss": vals[0],
            "grad_norm": float(grad_norm),
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
        if self._fsdp or self._deepspeed:
            raise RuntimeError(
                f"{self.role}: state_dict() holds full tensors; a {self.parallelism.strategy} learner "
                "saves its sharded state with save(directory)"
            )
        adapters = self.peft_model is not None  # adapters only: the base weights come from the model path
        state = {
            "format": LEARNER_FORMAT,
            "layout": self.parallelism.strategy,
            "role": self.role,
            "step": self.step,
            "model": (
                lora.adapter_state_dict(self.peft_model)
                if adapters
                else self.accelerator.get_state_dict(self.model)
            ),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }
        if adapters:
            state["lora"] = True
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned; the next ``update`` continues bit for bit."""
        self._load_model_state(state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])

    def save(self, directory: str | Path) -> None:
        """Write this role's resumable state into ``directory``; every process calls it.

        Files (``R`` = the role): ``R.pt``, written by the main process and readable with
        ``torch.load(..., weights_only=True)``: step, scheduler and, for one process or DDP, the float32
        model and the optimizer state (``state_dict()``). FSDP2 adds ``R.dcp/``, a
        ``torch.distributed.checkpoint`` directory of the sharded model and optimizer written by every
        process; DeepSpeed adds ``R.deepspeed/``, the engine's own checkpoint.
        """
        directory = Path(directory)
        acc = self.accelerator
        meta = {"format": LEARNER_FORMAT, "layout": self.parallelism.strategy, "role": self.role}
        if self._fsdp:
            has_optim = save_sharded_state(str(directory / f"{self.role}.dcp"), self.model, self.optimizer)
            meta["optimizer_state"] = has_optim
            payload = {**meta, "step": self.step, "scheduler": self.scheduler.state_dict()}
        elif self._deepspeed:
            self.model.save_checkpoint(
                str(directory),
                tag=f"{self.role}.deepspeed",
                save_latest=False,
                exclude_frozen_parameters=False,
            )
            payload = {**meta, "step": self.step, "scheduler": self.scheduler.state_dict()}
        else:
            payload = self.state_dict()
        if acc.is_main_process:
            with open(directory / f"{self.role}.pt", "wb") as fh:
                torch.save(payload, fh)
        acc.wait_for_everyone()

    def load(self, directory: str | Path) -> None:
        """Restore what ``save`` wrote (every process calls it); the next ``update`` continues bit for bit.

        Raises ``ValueError`` when the files were written under another strategy.
        """
        directory = Path(directory)
        payload = torch.load(directory / f"{self.role}.pt", map_location="cpu", weights_only=True)
        layout = payload.get("layout", "none")
        same = {layout, self.parallelism.strategy} <= {"none", "ddp"} or layout == self.parallelism.strategy
        if not same:
            raise ValueError(
                f"{self.role}: the checkpoint was written with distributed.strategy={layout} and this run "
                f"uses {self.parallelism.strategy}; resume with the strategy it was written with"
            )
        if self._fsdp:
            load_sharded_state(
                str(directory / f"{self.role}.dcp"),
                self.model,
                self.optimizer,
                has_optim=bool(payload.get("optimizer_state")),
            )
        elif self._deepspeed:
            with weights_only_loads(deepspeed_checkpoint_classes()):  # DeepSpeed's own torch.load calls
                path, _ = self.model.load_checkpoint(
                    str(directory),
                    tag=f"{self.role}.deepspeed",
                    load_optimizer_states=True,
                    load_lr_scheduler_states=False,
                )
            if path is None:
                raise ValueError(f"{self.role}: no DeepSpeed checkpoint in {directory}")
        else:
            self._load_model_state(payload)
            self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.step = int(payload["step"])
        self.accelerator.wait_for_everyone()

    def _load_model_state(self, state: dict) -> None:
        """The model part of ``state_dict()``: full weights, or LoRA adapters (``state["lora"]``)."""
        if bool(state.get("lora")) != (self.peft_model is not None):
            held = "LoRA adapters" if state.get("lora") else "full weights"
            trains = "LoRA adapters" if self.peft_model is not None else "full weights"
            raise ValueError(
                f"{self.role}: the checkpoint holds {held} and this run trains {trains} (model.lora.roles)"
            )
        if self.peft_model is not None:
            lora.load_adapter_state_dict(self.peft_model, state["model"])
        else:
            self.unwrapped_model.load_state_dict(state["model"])

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The float32 model weights, whole, on the main process ({} elsewhere); every process calls it.

        With LoRA: the merged weights under the base model's names (``lora.merged_state_items``).
        """
        if self.peft_model is not None:
            return dict(lora.merged_state_items(self.unwrapped_model))
        return full_model_state(self.model, self.parallelism, self.accelerator)

    def save_pretrained(self, directory: str | Path) -> None:
        """Write a Hugging Face model directory (weights, config, tokenizer) from the main process."""
        state = self.full_state_dict()
        if self.accelerator.is_main_process:
            Path(directory).mkdir(parents=True, exist_ok=True)
            self.unwrapped_model.save_pretrained(directory, state_dict=state)
            self.tokenizer.save_pretrained(directory)
        self.accelerator.wait_for_everyone()


def _implied(accelerator: Accelerator) -> Parallelism:
    """The layout an accelerator alone implies: one process or DDP in float32, or DeepSpeed ZeRO-2."""
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        dtype = torch.bfloat16 if accelerator.mixed_precision == "bf16" else torch.float32
        return Parallelism("deepspeed_zero2", dtype, accelerator.num_processes)
    if accelerator.num_processes > 1:
        return Parallelism("ddp", torch.float32, accelerator.num_processes)
    return Parallelism()


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
