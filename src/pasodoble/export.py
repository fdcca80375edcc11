"""A role's model out of a training checkpoint: what ``pasodoble eval --model CKPT --role R`` evaluates
and ``pasodoble export CKPT --role R --out DIR`` writes as a Hugging Face directory.

A checkpoint ``RUN/checkpoints/step_N/`` holds each learner's files as ``Learner.save`` wrote them, in
one of four layouts (``R`` = the role):

- one process or DDP: ``R.pt``, whose ``"model"`` is the float32 state dict; with LoRA
  (``"lora": true``) it holds the adapters only, merged here into the base with peft's
  ``merge_and_unload``;
- FSDP2: ``R.pt`` (step, scheduler) and ``R.dcp/``, a ``torch.distributed.checkpoint`` directory of the
  sharded model and optimizer, read without a process group into a plain model's state dict
  (``dcp.load(..., no_dist=True)``), its metadata through an unpickler that admits DCP's own classes only;
- DeepSpeed ZeRO-2: ``R.pt`` and ``R.deepspeed/``, the engine's checkpoint, whose float32 masters
  DeepSpeed's ``zero_to_fp32`` gathers (deepspeed extra) with every ``torch.load`` forced to
  ``weights_only`` and DeepSpeed's three checkpoint classes allowed.

The model's architecture, config and tokenizer come from the run: its ``config.yaml`` names the role's
starting model (``R.model_path``, else ``model.name_or_path``), which is loaded first and then given the
checkpoint's weights. Before anything is read, the role's files are checked against the sha256 recorded
in the checkpoint's ``state.json`` (``checkpoint.verify_checkpoint``). Every ``.pt`` file is read with
``torch.load(..., weights_only=True)``: a checkpoint may come from someone else.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pasodoble.checkpoint import read_dcp_metadata, safe_dcp_reader
from pasodoble.errors import UserError, missing_extra
from pasodoble.parallel import deepspeed_checkpoint_classes, weights_only_loads

ROLES = ("proposer", "solver")
EXPORT_INFO = "pasodoble_export.json"


@dataclass(frozen=True)
class RoleCheckpoint:
    """One role of a training checkpoint, its files verified."""

    directory: Path  # RUN/checkpoints/step_N
    role: str
    config_path: Path  # the run's config.yaml
    step: int
    layout: str  # none | ddp | fsdp2 | deepspeed_zero2
    lora: bool  # R.pt holds LoRA adapters only


def is_checkpoint(path: str | Path) -> bool:
    """A training checkpoint directory (holds a ``state.json``), complete or not."""
    return (Path(path) / "state.json").is_file()


def resolve(name_or_path: str, role: str | None = None) -> tuple[Path, str | None] | None:
    """``(checkpoint directory, role)`` when ``name_or_path`` names a training checkpoint, else None.

    ``RUN/checkpoints/step_N`` takes its role from ``role``; ``RUN/checkpoints/step_N/solver`` (or
    ``proposer``) names it in the path. The role may be None here (the caller asks for one).
    """
    path = Path(name_or_path).expanduser()
    if is_checkpoint(path):
        return path, role
    if path.name in ROLES and not path.exists() and is_checkpoint(path.parent):
        if role is not None and role != path.name:
            raise UserError(f"{name_or_path} names the {path.name}, but --role is {role}; give one of them")
        return path.parent, path.name
    return None


def run_directory_hint(path: str | Path) -> str | None:
    """For a run directory given where a checkpoint or model is expected: a sentence naming what to give."""
    from pasodoble.checkpoint import latest_checkpoint

    path = Path(path)
    if not (path / "config.yaml").is_file():
        return None
    latest = latest_checkpoint(path)
    ckpt = f"one of its checkpoints (the latest: {latest})" if latest else "one of its checkpoints (none yet)"
    return f"{path} is a run directory: give {ckpt} with --role, or its {path / 'solver_final'}"


def open_role(
    directory: str | Path, role: str | None, *, config: str | Path | None = None, verify: bool = True
) -> RoleCheckpoint:
    """Check that ``directory`` is a complete checkpoint holding ``role``, verify the role's files (unless
    the caller did: ``verify=False``) and find the run's config (``config`` or ``directory/../../config.yaml``).
    Errors are ``UserError``s."""
    from pasodoble.checkpoint import read_checkpoint_state, verify_checkpoint

    directory = Path(directory)
    if role is None:
        raise UserError(
            f"{directory} is a training checkpoint holding both roles; pass --role solver or --role proposer "
            f"(or name the role in the path: {directory}/solver)"
        )
    if role not in ROLES:
        raise UserError(f"--role must be proposer or solver; got {role!r}")
    payload = read_checkpoint_state(directory)
    recorded = payload.get("files", {})
    mine = sorted(
        rel
        for rel in recorded
        if rel == f"{role}.pt" or rel.startswith((f"{role}.dcp/", f"{role}.deepspeed/"))
    )
    if f"{role}.pt" not in mine:
        raise UserError(
            f"checkpoint {directory} holds no {role}.pt (not a training checkpoint of pasodoble train?)"
        )
    if verify:
        verify_checkpoint(directory, mine)
    head = _load_pt(directory / f"{role}.pt")
    layout = str(head.get("layout", "none"))
    config_path = Path(config) if config is not None else directory.parent.parent / "config.yaml"
    if not config_path.is_file():
        raise UserError(
            f"no run config at {config_path}: the checkpoint's model is named there; keep the checkpoint in "
            "its run directory (RUN/checkpoints/step_N) or pass the run's config.yaml with --train-config"
        )
    return RoleCheckpoint(
        directory=directory,
        role=role,
        config_path=config_path,
        step=int(payload.get("step", head.get("step", 0))),
        layout=layout,
        lora=bool(head.get("lora")),
    )


def _run_config(ckpt: RoleCheckpoint):
    import yaml

    from pasodoble.config import ConfigError, config_from_dict

    try:
        return config_from_dict(yaml.safe_load(ckpt.config_path.read_text()) or {})
    except (yaml.YAMLError, ConfigError) as exc:
        raise UserError(f"run config {ckpt.config_path} cannot be read ({exc})") from None


def load_role_model(ckpt: RoleCheckpoint, *, merge: bool = True):
    """(model, tokenizer): the role's starting model from the run's config with the checkpoint's float32
    weights (LoRA adapters merged; with ``merge=False`` a LoRA checkpoint gives the ``PeftModel``), on CPU,
    in eval mode."""
    from pasodoble.models import load_model_and_tokenizer

    cfg = _run_config(ckpt)
    role_cfg = getattr(cfg, ckpt.role)
    path = role_cfg.model_path or cfg.model.name_or_path
    field = f"{ckpt.role}.model_path" if role_cfg.model_path else "model.name_or_path"
    model, tokenizer = load_model_and_tokenizer(
        path, cfg.model, seed=cfg.run.seed, dtype="float32", field=field
    )
    where = f"{ckpt.directory}/{ckpt.role}"
    try:
        if ckpt.lora:
            model = _merge_adapters(
                model, _load_pt(ckpt.directory / f"{ckpt.role}.pt")["model"], cfg, ckpt, merge
            )
        else:
            load_role_weights(ckpt, model)
    except (RuntimeError, KeyError, ValueError) as exc:
        if isinstance(exc, UserError):
            raise
        raise UserError(
            f"checkpoint {where} does not fit the model {path} ({field} in {ckpt.config_path}): "
            f"{' '.join(str(exc).split())[:200]}"
        ) from None
    model.eval()
    return model, tokenizer


def load_role_weights(ckpt: RoleCheckpoint, model: torch.nn.Module) -> None:
    """Fill ``model`` (a plain transformers model of the role's architecture) with the checkpoint's whole
    float32 weights, from any layout; LoRA adapters come merged into the base the checkpoint's run names.
    A model they do not fit raises ``RuntimeError`` or ``KeyError`` (the caller names the model)."""
    where = f"{ckpt.directory}/{ckpt.role}"
    if ckpt.lora:
        merged, _ = load_role_model(ckpt)
        model.load_state_dict(merged.state_dict())
    elif ckpt.layout in ("none", "ddp"):
        model.load_state_dict(_load_pt(ckpt.directory / f"{ckpt.role}.pt")["model"])
    elif ckpt.layout == "fsdp2":
        _load_dcp(model, ckpt.directory / f"{ckpt.role}.dcp")
    elif ckpt.layout == "deepspeed_zero2":
        model.load_state_dict(_load_deepspeed(ckpt.directory, f"{ckpt.role}.deepspeed"))
    else:
        raise UserError(f"checkpoint {where} has an unknown layout {ckpt.layout!r}")


def export_role(
    ckpt: RoleCheckpoint, out: str | Path, *, dtype: str = "float32", adapter_only: bool = False
) -> Path:
    """Write the role's model as a Hugging Face directory (weights, config, tokenizer) at ``out``.

    ``adapter_only`` (a LoRA checkpoint): peft's adapter files only (``adapter_config.json``,
    ``adapter_model.safetensors``), loadable with ``PeftModel.from_pretrained(base, out)`` onto the role's
    base model, which ``adapter_config.json`` names (``base_model_name_or_path``: the run's model path,
    made absolute when it is a directory). ``out`` must not exist or be empty, and may not lie inside the
    checkpoint. The directory is written beside it under a temporary name and renamed into place when
    complete.
    """
    from pasodoble.models import torch_dtype

    if adapter_only and not ckpt.lora:
        raise UserError(
            f"--adapter-only: the {ckpt.role} in {ckpt.directory} holds full weights, not LoRA adapters; "
            "export it without --adapter-only"
        )
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out} exists and is not an empty directory; choose a new --out")
    if out.resolve().is_relative_to(ckpt.directory.resolve()):
        raise UserError(
            f"--out {out} is inside the checkpoint {ckpt.directory}; choose a directory outside it"
        )
    model, tokenizer = load_role_model(ckpt, merge=not adapter_only)
    model.to(torch_dtype(dtype))
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if adapter_only:
            base = model.peft_config["default"].base_model_name_or_path or ""
            if base and Path(base).expanduser().is_dir():
                model.peft_config["default"].base_model_name_or_path = str(Path(base).expanduser().resolve())
            model.save_pretrained(tmp)
        else:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    info = {
        "checkpoint": str(ckpt.directory),
        "role": ckpt.role,
        "step": ckpt.step,
        "layout": ckpt.layout,
        "lora_merged": ckpt.lora and not adapter_only,
        "adapter_only": adapter_only,
        "dtype": dtype,
        "run_config": str(ckpt.config_path),
    }
    (tmp / EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n")
    if out.exists():
        out.rmdir()
    os.replace(tmp, out)
    return out


# --------------------------------------------------------------------------------------------------
# Layouts


def _load_pt(path: Path) -> dict[str, Any]:
    """A learner's ``R.pt``: tensors and plain data only; memory-mapped (its optimizer state is never read)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a damaged or foreign file
        raise UserError(
            f"checkpoint file {path} is unreadable ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})"
        ) from None


def _merge_adapters(
    model: torch.nn.Module, adapters: dict, cfg, ckpt: RoleCheckpoint, merge: bool = True
) -> torch.nn.Module:
    from pasodoble import lora

    lora.check_available()
    peft_model = lora.wrap(model, cfg.model.lora, role=ckpt.role)
    lora.load_adapter_state_dict(peft_model, adapters)
    return lora.merged_model(peft_model) if merge else peft_model


def _load_dcp(model: torch.nn.Module, path: Path) -> None:
    """Fill ``model``'s state dict from the ``"model"`` entries of an FSDP2 DCP directory, one process."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    try:  # checked here first: inside dcp.load a refusal is logged with tracebacks and wrapped
        read_dcp_metadata(path / ".metadata")
    except (pickle.UnpicklingError, EOFError) as exc:
        raise UserError(f"checkpoint file {path / '.metadata'} is refused: {exc}") from None
    state = {"model": model.state_dict()}
    try:
        with warnings.catch_warnings():  # "torch.distributed is disabled ...": one process is the intent
            warnings.filterwarnings("ignore", message="torch.distributed is disabled", category=UserWarning)
            dcp.load(state, storage_reader=safe_dcp_reader(path), no_dist=True)
    except (Exception, CheckpointException) as exc:  # DCP wraps any read error (a BaseException)
        raise RuntimeError(f"reading {path}: {' '.join(str(exc).split())[:300]}") from None


def _load_deepspeed(directory: Path, tag: str) -> dict[str, torch.Tensor]:
    """The float32 weights of a DeepSpeed ZeRO-2 engine checkpoint (DeepSpeed's ``zero_to_fp32``)."""
    import importlib.util

    if importlib.util.find_spec("deepspeed") is None:
        raise missing_extra(
            "deepspeed", f"checkpoint {directory}/{tag} was written by DeepSpeed; reading it needs deepspeed"
        )
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    # zero_to_fp32 prints its progress: keep stdout for the command's own output
    with (
        weights_only_loads(deepspeed_checkpoint_classes()),
        contextlib.redirect_stdout(sys.stderr),
    ):
        try:
            return dict(get_fp32_state_dict_from_zero_checkpoint(str(directory), tag=tag))
        except pickle.UnpicklingError as exc:
            raise UserError(
                f"checkpoint {directory}/{tag} is refused: {' '.join(str(exc).split())[:200]}"
            ) from None
