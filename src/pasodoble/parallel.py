"""How the learners are laid out over processes, and in what precision.

Precision (every strategy): **master weights and AdamW state are float32**; ``model.dtype`` is the
*compute* dtype. At the paper's learning rate of 1e-6 an AdamW step changes a weight by about
1e-6 of its size, far below bfloat16's resolution (2^-8 = 0.4%): held in bfloat16, 98% of the weights
did not move at all in one step (measured on an H200, issue 14). So:

- ``none`` (one process) and ``ddp``: the model stays whole in float32 on every process; with
  ``model.dtype=bfloat16`` the learner's forward runs under ``torch.autocast(bfloat16)`` and the
  transformers generation backend decodes under the same autocast (the casts are cached per call).
- ``fsdp2``: torch's ``fully_shard`` on every decoder layer, then on the root, over a 1-D device mesh
  of all processes, with ``MixedPrecisionPolicy(param_dtype=compute, reduce_dtype=float32)``; float32
  shards, gradients reduce-scattered after *every* micro-batch so they stay sharded (no ``no_sync``,
  whose unsharded gradients would cost 4 bytes per parameter). Applied here rather than through
  accelerate's plugin so that the very same code runs on GPUs (NCCL) and in the CPU tests (gloo).
  Generation cannot run through sharded modules (decode loops of different lengths would issue
  different collectives on different ranks), so the transformers backend gets a full replica in the
  compute dtype (``GenerationReplica``), one per process, refreshed by a gather after updates.
- ``deepspeed_zero2``: DeepSpeed's engine through accelerate, bf16 engine weights with float32 master
  weights and moments partitioned over the processes.

``distributed.strategy`` applies when the processes form a ``torch.distributed`` group (``torchrun``);
a plain single-process run uses ``none`` and says so. ``describe()`` is printed at the start of every
run, so no fallback is silent.
"""

from __future__ import annotations

import contextlib
import copy
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch

from pasodoble.checkpoint import read_dcp_metadata, safe_dcp_reader
from pasodoble.errors import UserError
from pasodoble.rollout.base import GenerationBackend
from pasodoble.rollout.slot import ModelReplica

STRATEGIES = ("none", "ddp", "fsdp2", "deepspeed_zero2")
COMPUTE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Parallelism:
    """The layout a learner runs under (the *effective* strategy, after the launch is known)."""

    strategy: str = "none"
    compute_dtype: torch.dtype = torch.float32
    num_processes: int = 1

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}; got {self.strategy!r}")

    @property
    def sharded(self) -> bool:
        """Parameters are split over processes (reading a full weight needs a collective)."""
        return self.strategy == "fsdp2"

    def autocast(self, device: torch.device):
        """The forward's autocast context: bf16 over fp32 weights for ``none``/``ddp``; a no-op otherwise
        (FSDP2 casts through its mixed-precision policy, DeepSpeed holds bf16 engine weights)."""
        if self.strategy in ("none", "ddp") and self.compute_dtype != torch.float32:
            return torch.autocast(device_type=device.type, dtype=self.compute_dtype)
        return contextlib.nullcontext()

    def describe(self) -> str:
        dtype = str(self.compute_dtype).removeprefix("torch.")
        n = self.num_processes
        return (
            f"strategy: {self.strategy}, {n} process{'es' if n != 1 else ''}, compute {dtype}, "
            "master weights and optimizer state float32"
        )


def compute_dtype(name: str) -> torch.dtype:
    try:
        return COMPUTE_DTYPES[name]
    except KeyError:
        raise UserError(
            f"model.dtype={name!r} is not a compute dtype PasoDoble trains in; use float32 or bfloat16 "
            "(float16 would need loss scaling)"
        ) from None


def _launched_world() -> tuple[int, bool]:
    """(processes launched, whether a torch.distributed launcher set this process up)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return world, "RANK" in os.environ and "MASTER_ADDR" in os.environ


def build_accelerator(strategy: str, dtype_name: str, *, cpu: bool, **kwargs):
    """An ``accelerate.Accelerator`` and the ``Parallelism`` it runs: ``strategy`` (a run's
    ``distributed.strategy``) where the launch allows it (under ``torchrun``), ``dtype_name`` (its
    ``model.dtype``) the compute dtype.

    ``kwargs`` go to the Accelerator (e.g. ``log_with``). For ``fsdp2`` the Accelerator only sets up
    the device and process group; ``trainable.Trainable`` shards the model itself (``shard_model``).
    """
    from accelerate import Accelerator

    dtype = compute_dtype(dtype_name)
    wanted = strategy
    world, launched = _launched_world()
    if wanted == "deepspeed_zero2" and (world > 1 or not cpu):
        from accelerate.utils import DeepSpeedPlugin, InitProcessGroupKwargs

        plugin = DeepSpeedPlugin(zero_stage=2, gradient_accumulation_steps=1, gradient_clipping=0.0)
        extra = dict(kwargs)
        if cpu:  # cpu=True would turn DeepSpeed off; name gloo, DeepSpeed's CPU communicator
            extra.setdefault("kwargs_handlers", []).append(InitProcessGroupKwargs(backend="gloo"))
        acc = Accelerator(
            deepspeed_plugin=plugin, mixed_precision="bf16" if dtype == torch.bfloat16 else "no", **extra
        )
        return acc, Parallelism("deepspeed_zero2", dtype, acc.num_processes)
    acc = Accelerator(cpu=cpu, **kwargs)
    if wanted == "fsdp2" and (world > 1 or launched):
        _ensure_process_group(cpu)
        return acc, Parallelism("fsdp2", dtype, world)
    if acc.num_processes > 1:
        return acc, Parallelism("ddp", dtype, acc.num_processes)
    return acc, Parallelism("none", dtype, 1)


def _ensure_process_group(cpu: bool) -> None:
    """A one-process torchrun launch gets no process group from accelerate; FSDP2 needs one."""
    import torch.distributed as tdist

    if not tdist.is_initialized():
        if not cpu:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        tdist.init_process_group("gloo" if cpu else "nccl")


def init_processes(cpu: bool) -> None:
    """Form the process group of a ``torchrun`` launch now (a no-op otherwise, and when it exists).

    The trainer decides things on the main process before the learners are built (the run directory's
    checks and lock), and only a process group tells the processes which of them is the main one.
    accelerate and DeepSpeed reuse the group.
    """
    world, launched = _launched_world()
    if launched and world > 1:
        _ensure_process_group(cpu)


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks of a causal LM (``model.model.layers`` for Llama/Qwen-style models)."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if isinstance(layers, torch.nn.ModuleList) and len(layers):
        return list(layers)
    found = [m for m in model.modules() if type(m).__name__.endswith("DecoderLayer")]
    if not found:
        raise UserError(
            f"cannot find the decoder layers of {type(model).__name__} to shard with FSDP2; use "
            "distributed.strategy=ddp or deepspeed_zero2"
        )
    return found


def shard_model(model: torch.nn.Module, par: Parallelism, device: torch.device) -> torch.nn.Module:
    """Apply FSDP2 in place: each decoder layer, then the root, over all processes (see module doc)."""
    import torch.distributed as tdist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (tdist.get_world_size(),))
    if par.compute_dtype == torch.float32:
        policy = MixedPrecisionPolicy()
    else:
        policy = MixedPrecisionPolicy(param_dtype=par.compute_dtype, reduce_dtype=torch.float32)
    model.to(device)
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh, mp_policy=policy, reshard_after_forward=True)
    fully_shard(model, mesh=mesh, mp_policy=policy, reshard_after_forward=True)
    return model


def upcast_master(model: torch.nn.Module) -> torch.nn.Module:
    """Master weights are at least float32: 16-bit floating parameters and buffers are upcast in place."""
    for p in model.parameters():
        if p.is_floating_point() and p.dtype in (torch.bfloat16, torch.float16):
            p.data = p.data.float()
    for name, b in model.named_buffers():
        if b.is_floating_point() and b.dtype in (torch.bfloat16, torch.float16):
            module, _, leaf = name.rpartition(".")
            owner = model.get_submodule(module) if module else model
            setattr(owner, leaf, b.float())
    return model


class GenerationReplica(ModelReplica):
    """A full, unsharded copy of the policy in the compute dtype, for generation under FSDP2.

    One per process, shared by both roles (they have one architecture): a ``RoleSlot`` keyed by role name,
    so ``ensure(role, model)`` copies the role's current weights in when the replica holds another role's
    or stale ones. Loading gathers the FSDP2 shards, a collective: every process calls it at the same point.
    """

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__(copy.deepcopy(model).to(device=device, dtype=dtype), dtype)

    @property
    def model(self) -> torch.nn.Module:
        """The replica's module (what the role's inner backend generates with)."""
        return self.module


class ReplicaBackend(GenerationBackend):
    """A role's ``GenerationBackend`` over a shared ``GenerationReplica`` (FSDP2 with a transformers backend).

    ``generate`` and ``hold`` first load the role's current weights into the replica when it holds another
    role's or stale ones (a gather every process takes part in, so ``generate`` is called on every process,
    with an empty prompt list where a process has no share); ``sync_weights`` only marks them stale;
    ``pop_sync_seconds`` reports the time spent loading since the last call (``time/weight_sync``).
    """

    def __init__(
        self, role: str, inner: GenerationBackend, replica: GenerationReplica, source: torch.nn.Module
    ) -> None:
        self.role = role
        self.inner = inner
        self.replica = replica
        self.source = source

    def generate(self, prompts, params):
        self.hold()
        return self.inner.generate(prompts, params) if prompts else []

    def sync_weights(self, model: torch.nn.Module) -> None:
        self.source = model
        self.replica.invalidate(self.role)

    def hold(self) -> None:
        """Load the role's current weights now (every process): ``local()`` then generates without a gather."""
        self._sync_seconds += self.replica.ensure(self.role, self.source)

    def local(self) -> GenerationBackend:
        """The inner backend, for generation on one process alone (evaluation on the main process), after
        ``hold()`` on every process."""
        return self.inner


# --------------------------------------------------------------------------------------------------
# Training state of a sharded model (shared by the learner and the SFT loop)


def save_sharded_state(path: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> bool:
    """Every process writes its shards of the FSDP2 model and optimizer into the DCP directory ``path``.

    Returns whether optimizer state was written: an optimizer that has not stepped has none, and
    ``get_optimizer_state_dict`` would create it with a fake step (AdamW's step count 1) that a resumed
    run must not inherit.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    has_optim = bool(optimizer.state)
    state = {"model": get_model_state_dict(model)}
    if has_optim:
        state["optimizer"] = get_optimizer_state_dict(model, optimizer)
    dcp.save(state, checkpoint_id=path)
    return has_optim


def load_sharded_state(
    path: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, has_optim: bool
) -> None:
    """Every process reads its shards back (DCP reshards when the process count changed).

    The metadata is read with DCP's own classes only (``safe_dcp_reader``): a checkpoint may come from
    someone else, and DCP itself unpickles it with no restriction.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    state = {"model": get_model_state_dict(model)}
    if has_optim:
        state["optimizer"] = get_optimizer_state_dict(model, optimizer)
    try:  # checked first: inside dcp.load a refusal is logged with tracebacks and wrapped
        read_dcp_metadata(Path(path) / ".metadata")
    except (pickle.UnpicklingError, EOFError) as exc:
        raise ValueError(f"checkpoint file {Path(path) / '.metadata'} is refused: {exc}") from None
    dcp.load(state, checkpoint_id=path, storage_reader=safe_dcp_reader(path))
    set_model_state_dict(model, state["model"])
    if has_optim:
        set_optimizer_state_dict(model, optimizer, state["optimizer"])


def full_model_state(model: torch.nn.Module, par: Parallelism, accelerator) -> dict[str, torch.Tensor]:
    """The model's whole weights on the main process (a collective under FSDP2: every process calls it)."""
    if par.sharded:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return accelerator.get_state_dict(model)


@contextlib.contextmanager
def weights_only_loads(allowed: list):
    """Every ``torch.load`` inside is ``weights_only`` (torch's ``TORCH_FORCE_WEIGHTS_ONLY_LOAD``), with
    ``allowed`` classes admitted (``torch.serialization.safe_globals``): for libraries that load
    checkpoint files themselves (DeepSpeed) and would otherwise unpickle anything."""
    key = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
    before = os.environ.get(key)
    os.environ[key] = "1"
    try:
        with torch.serialization.safe_globals(allowed):
            yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def deepspeed_checkpoint_classes() -> list:
    """The DeepSpeed classes its ZeRO-2 checkpoint files hold (admitted by ``weights_only_loads``)."""
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, ZeroStageEnum, fragment_address]
