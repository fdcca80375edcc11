"""One model being trained, in any layout: the distributed-training layer under both training loops.

``Trainable`` holds a model, its AdamW and its learning-rate schedule, laid out by strategy (one
process, DDP, FSDP2 or DeepSpeed ZeRO-2; ``parallel.py``), and is the only place that knows how each
layout accumulates, clips, steps and saves. The GRPO ``Learner`` (``learner.py``) and the SFT loop
(``sft/train.py``) are written against it and know no strategy. It is built from explicit arguments
(no ``Config``), as torchtune's recipes share ``training/_distributed.py``.

One optimizer step::

    for j, micro in enumerate(micro_batches):
        with trainable.micro_batch(last=j == len(micro_batches) - 1):
            with trainable.autocast():
                loss = compute_loss(trainable.model, micro)
            trainable.backward(loss * trainable.num_processes)
    grad_norm = trainable.clip_and_step()

``micro_batch(last)`` must hold the forward too: DDP decides in its forward whether the backward
all-reduces (``no_sync`` on every micro-batch but the last), and DeepSpeed's engine is told which
backward closes the accumulation. FSDP2 reduce-scatters after every micro-batch so its gradients
stay sharded (``no_sync`` would accumulate unsharded ones, 4 bytes per parameter). DDP, FSDP2 and
DeepSpeed *average* gradients over processes: a loss normalized by counts of the whole batch (all
processes) is multiplied by ``num_processes`` so that the step equals the one-process full-batch step.
Every process must run the same number of micro-batches (zero-weight passes where its share is
shorter): FSDP2's and DeepSpeed's collectives are matched call for call.

Precision: master weights and AdamW state are float32 whatever the compute dtype (16-bit parameters
are upcast here); ``parallelism.compute_dtype`` is what the forward computes in (``autocast()`` for one
process and DDP, FSDP2's mixed-precision policy, DeepSpeed's bf16 engine).

LoRA (``lora.py``): given a ``peft.PeftModel``, the layer trains the transformers model peft injected
its adapters into (only the adapters require gradients, so AdamW holds only theirs); its state holds
the adapters and their optimizer state only, and ``full_state_dict`` the merged full model.

Files (``save(directory, name)``): ``name.pt``, written by the main process and readable with
``torch.load(..., weights_only=True)``: the caller's entries, ``layout``, the scheduler and, for one
process or DDP, the float32 ``model`` and the ``optimizer`` state. FSDP2 adds ``name.dcp/``, a
``torch.distributed.checkpoint`` directory of the sharded model and optimizer written by every
process; DeepSpeed adds ``name.deepspeed/``, the engine's own checkpoint.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from transformers import get_scheduler

from pasodoble import lora
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

SCHEDULES = {"constant": "constant_with_warmup", "cosine": "cosine"}


class Trainable:
    """A model, its AdamW and its schedule, prepared for one layout (see the module docstring).

    Args:
        model: the causal LM to train (not yet wrapped), or a ``peft.PeftModel`` (``lora.wrap``).
        lr, betas, weight_decay: AdamW's settings (over the parameters that require gradients).
        max_grad_norm: global-norm clipping in ``clip_and_step``; 0 disables it (the norm is still returned).
        lr_schedule: ``constant`` or ``cosine`` after ``warmup_steps`` of linear warm-up (transformers'
            ``get_scheduler``); ``cosine`` needs ``total_steps``, the optimizer steps of the run.
        micro_batch_size: sequences per forward (DeepSpeed's config wants it).
        gradient_checkpointing: recompute activations in backward (the only activation checkpointing
            applied: FSDP2 adds none of its own).
        accelerator: an ``accelerate.Accelerator`` (default: a new one; CPU when no GPU is present).
        parallelism: strategy and compute dtype (``parallel.build_accelerator`` returns it with the
            accelerator); default: what ``accelerator`` implies (one process, DDP or DeepSpeed), float32.
        label: names the model in errors (a role, ``sft``).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        max_grad_norm: float = 1.0,
        lr_schedule: str = "constant",
        warmup_steps: int = 0,
        total_steps: int | None = None,
        micro_batch_size: int = 1,
        gradient_checkpointing: bool = False,
        accelerator: Accelerator | None = None,
        parallelism: Parallelism | None = None,
        label: str = "model",
    ) -> None:
        self.label = label
        self.max_grad_norm = float(max_grad_norm)
        self.accelerator = (
            accelerator if accelerator is not None else Accelerator(cpu=not torch.cuda.is_available())
        )
        self.parallelism = parallelism if parallelism is not None else implied_parallelism(self.accelerator)
        self.sharded = self.parallelism.strategy == "fsdp2"
        self.deepspeed = self.accelerator.distributed_type == DistributedType.DEEPSPEED
        if self.sharded and self.deepspeed:
            raise ValueError(f"{label}: an FSDP2 layout with a DeepSpeed accelerator")
        if lr_schedule not in SCHEDULES:
            raise ValueError(f"{label}: lr_schedule must be one of {tuple(SCHEDULES)}; got {lr_schedule!r}")
        if lr_schedule == "cosine" and total_steps is None:
            raise ValueError(f"{label}: the cosine schedule needs total_steps (optimizer steps of the run)")

        # LoRA: keep peft's handle for the adapter state; train the transformers model it adapted in place
        self.peft_model = None
        if lora.is_peft_model(model):
            lora.check_layout(self.parallelism.strategy, self.parallelism.num_processes)
            self.peft_model, model = model, model.get_base_model()
        upcast_master(model)
        if gradient_checkpointing:
            ckpt_kwargs = {"use_reentrant": False}
            if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x
                model.activation_checkpointing_enable(activation_checkpointing_kwargs=ckpt_kwargs)
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=ckpt_kwargs)
        if self.sharded:
            shard_model(model, self.parallelism, self.accelerator.device)
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],
            lr=lr,
            betas=betas,
            weight_decay=weight_decay,
        )
        self.scheduler = get_scheduler(
            SCHEDULES[lr_schedule],
            optimizer,
            num_warmup_steps=warmup_steps,
            num_training_steps=total_steps,
        )
        # Under DeepSpeed the engine makes the optimizer step, clipping included: this layer marks the
        # accumulation boundary itself (one engine.step() per optimizer step), so DeepSpeed's own
        # accumulation must stay 1; the clip norm is this model's (read when prepare() builds the engine).
        if self.deepspeed:
            ds_config = self.accelerator.state.deepspeed_plugin.deepspeed_config
            if ds_config.get("gradient_accumulation_steps", 1) not in (1, "auto"):
                raise ValueError(
                    f"{label}: the DeepSpeed config's gradient_accumulation_steps must be 1 (micro-batches "
                    f"are accumulated here); got {ds_config['gradient_accumulation_steps']}"
                )
            ds_config["gradient_clipping"] = self.max_grad_norm
            if ds_config.get("train_micro_batch_size_per_gpu", "auto") == "auto":
                ds_config["train_micro_batch_size_per_gpu"] = micro_batch_size
        # The scheduler is not prepared: accelerate would step it once per process. Under FSDP2 the
        # model is already sharded in place and the optimizer holds its DTensor shards: nothing to wrap.
        if self.sharded:
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
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def num_processes(self) -> int:
        return self.accelerator.num_processes

    @property
    def lr(self) -> float:
        """The learning rate the next optimizer step uses."""
        return self.scheduler.get_last_lr()[0]

    def autocast(self):
        """The forward's autocast context (``Parallelism.autocast``: bf16 over fp32 weights where needed)."""
        return self.parallelism.autocast(self.device)

    def max_over_processes(self, n: int) -> int:
        """The largest ``n`` over all processes (a collective; e.g. the micro-batch count every rank runs)."""
        if self.num_processes == 1:
            return int(n)
        value = torch.tensor([n], device=self.device)
        return int(self.accelerator.reduce(value, reduction="max").item())

    # ----------------------------------------------------------------------------------------------
    # One optimizer step

    def micro_batch(self, last: bool):
        """The context of one micro-batch's forward and backward; ``last`` closes the accumulation.

        DDP all-reduces only on the last (``no_sync`` before it); DeepSpeed's boundary is set to ``last``;
        FSDP2 and one process need nothing.
        """
        if self.deepspeed:
            self.model.set_gradient_accumulation_boundary(last)
        if last or self.sharded:
            return contextlib.nullcontext()
        return self.accelerator.no_sync(self.model)  # a no-op for one process and for ZeRO-2

    def backward(self, loss: torch.Tensor) -> None:
        """Accumulate ``loss``'s gradients (inside ``micro_batch``); the caller scales the loss."""
        if self.deepspeed:  # accelerator.backward would also step the engine after every micro-batch
            self.model.backward(loss)
        else:
            self.accelerator.backward(loss)

    def clip_and_step(self) -> float:
        """Clip at ``max_grad_norm``, step the optimizer and the schedule, zero the gradients.

        Returns the global gradient norm before clipping (the same on every process).
        """
        if self.deepspeed:
            self.model.step()  # clips at max_grad_norm, steps the optimizer, zeroes the gradients
            grad_norm = self.model.get_global_grad_norm()  # before clipping
        else:
            max_norm = self.max_grad_norm if self.max_grad_norm > 0 else float("inf")
            if self.sharded:  # the norm of DTensor gradients is a DTensor: the global norm, replicated
                grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
                grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
            else:
                grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), max_norm)
            self.optimizer.step()
            self.zero_grad()
        self.scheduler.step()
        return float(grad_norm)

    def zero_grad(self) -> None:
        """Drop the accumulated gradients (``clip_and_step`` does it after every step)."""
        if self.deepspeed:
            self.model.zero_grad()
        else:
            self.optimizer.zero_grad(set_to_none=True)

    # ----------------------------------------------------------------------------------------------
    # State

    def state_dict(self) -> dict[str, Any]:
        """Model, optimizer and scheduler (unsharded layouts: one process or DDP); live tensors.

        With LoRA, ``model`` holds the adapters only and ``lora`` is True. Sharded (FSDP2) and DeepSpeed
        models have no in-memory full state: use ``save``/``load``.
        """
        if self.sharded or self.deepspeed:
            raise RuntimeError(
                f"{self.label}: state_dict() holds full tensors; a {self.parallelism.strategy} learner "
                "saves its sharded state with save(directory)"
            )
        adapters = self.peft_model is not None  # adapters only: the base weights come from the model path
        state: dict[str, Any] = {
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

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        self._load_model_state(state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    def save(self, directory: str | Path, name: str, extra: dict[str, Any] | None = None) -> None:
        """Write the resumable state as ``name.pt`` (holding ``extra`` too) and, sharded, ``name.dcp/`` or
        ``name.deepspeed/`` (see the module docstring); every process calls it."""
        directory = Path(directory)
        payload: dict[str, Any] = {**(extra or {}), "layout": self.parallelism.strategy}
        if self.sharded:
            has_optim = save_sharded_state(str(directory / f"{name}.dcp"), self.model, self.optimizer)
            payload["optimizer_state"] = has_optim
            payload["scheduler"] = self.scheduler.state_dict()
        elif self.deepspeed:
            self.model.save_checkpoint(
                str(directory),
                tag=f"{name}.deepspeed",
                save_latest=False,
                exclude_frozen_parameters=False,
            )
            payload["scheduler"] = self.scheduler.state_dict()
        else:
            payload.update(self.state_dict())
        if self.accelerator.is_main_process:
            with open(directory / f"{name}.pt", "wb") as fh:
                torch.save(payload, fh)
        self.accelerator.wait_for_everyone()

    def load(self, directory: str | Path, name: str) -> dict[str, Any]:
        """Restore what ``save`` wrote (every process calls it) and return ``name.pt``'s entries; the
        next step continues bit for bit. Raises ``ValueError`` when the files were written under another
        strategy (one process and DDP share a layout)."""
        directory = Path(directory)
        payload = torch.load(directory / f"{name}.pt", map_location="cpu", weights_only=True)
        layout = payload.get("layout", payload.get("strategy", "none"))  # SFT files before 0.2 said strategy
        if not same_layout(layout, self.parallelism.strategy):
            raise ValueError(
                f"{self.label}: the checkpoint was written with distributed.strategy={layout} and this run "
                f"uses {self.parallelism.strategy}; resume with the strategy it was written with"
            )
        if self.sharded:
            load_sharded_state(
                str(directory / f"{name}.dcp"),
                self.model,
                self.optimizer,
                has_optim=bool(payload.get("optimizer_state")),
            )
        elif self.deepspeed:
            with weights_only_loads(deepspeed_checkpoint_classes()):  # DeepSpeed's own torch.load calls
                path, _ = self.model.load_checkpoint(
                    str(directory),
                    tag=f"{name}.deepspeed",
                    load_optimizer_states=True,
                    load_lr_scheduler_states=False,
                )
            if path is None:
                raise ValueError(f"{self.label}: no DeepSpeed checkpoint in {directory}")
        else:
            self._load_model_state(payload)
            self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.accelerator.wait_for_everyone()
        return payload

    def _load_model_state(self, state: dict[str, Any]) -> None:
        """The model part of ``state_dict()``: full weights, or LoRA adapters (``state["lora"]``)."""
        if bool(state.get("lora")) != (self.peft_model is not None):
            held = "LoRA adapters" if state.get("lora") else "full weights"
            trains = "LoRA adapters" if self.peft_model is not None else "full weights"
            raise ValueError(
                f"{self.label}: the checkpoint holds {held} and this run trains {trains} (model.lora.roles)"
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

    def save_pretrained(self, directory: str | Path, tokenizer) -> None:
        """Write a Hugging Face model directory (weights, config, tokenizer) from the main process."""
        state = self.full_state_dict()
        if self.accelerator.is_main_process:
            Path(directory).mkdir(parents=True, exist_ok=True)
            self.unwrapped_model.save_pretrained(directory, state_dict=state)
            tokenizer.save_pretrained(directory)
        self.accelerator.wait_for_everyone()


def same_layout(written: str, running: str) -> bool:
    """Whether state written under strategy ``written`` loads under ``running`` (one process and DDP
    hold the same full state)."""
    return {written, running} <= {"none", "ddp"} or written == running


def implied_parallelism(accelerator: Accelerator) -> Parallelism:
    """The layout an accelerator alone implies: one process or DDP in float32, or DeepSpeed ZeRO-2."""
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        dtype = torch.bfloat16 if accelerator.mixed_precision == "bf16" else torch.float32
        return Parallelism("deepspeed_zero2", dtype, accelerator.num_processes)
    if accelerator.num_processes > 1:
        return Parallelism("ddp", torch.float32, accelerator.num_processes)
    return Parallelism()
