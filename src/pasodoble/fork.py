"""Fork a run: a new run (its own run directory, step 0) that starts from a checkpoint of another run.

    pasodoble train NEW.yaml --init-from RUN/checkpoints/step_N [--init-state]

(``init_from.checkpoint`` and ``init_from.state`` in the config; the CLI flags set them.) Both roles start
from the checkpoint's weights, read as ``pasodoble export`` reads them (``export.load_role_weights``: one
process, DDP, FSDP2's DCP shards, DeepSpeed's ZeRO files, LoRA adapters). With ``state`` the learners
instead load the checkpoint as ``--resume`` does (``Learner.load``: weights and AdamW state, in the layout
they were written), and the question buffer, diversity history and knowledge position are carried where
they fit this run. What is *not* carried: the step counters (the new run starts at step 0, so its rollout
seeds are those of its own steps), the RNG states (the new run seeds from its ``run.seed``), the logs, and
the optimizer's hyperparameters: learning rate, betas, weight decay and the LR schedule are the new config's,
its schedule starting at the new run's step 0 (AdamW's per-parameter step count, its bias correction,
continues). A LoRA role starts from adapters only: the new run must train the same adapters (rank, alpha,
targets) on the same base model.

Everything that can be checked before a model loads is checked in ``open_fork`` (the checkpoint is complete
and its files match their sha256, both roles are there, LoRA fits); a layout the optimizer state cannot be
loaded into is refused once the run's layout is known, before the models load (``check_layout``). Each
refusal is one ``UserError`` line naming what differs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pasodoble import distributed as dist
from pasodoble.config import Config, ConfigError, config_from_dict
from pasodoble.errors import UserError
from pasodoble.export import ROLES, RoleCheckpoint, load_role_weights, open_role, resolve, run_directory_hint


@dataclass
class ForkSource:
    """A checkpoint a new run starts from (``open_fork``)."""

    directory: Path
    step: int
    state: bool
    roles: dict[str, RoleCheckpoint]
    source_cfg: Config
    checkpoint_state: dict[str, Any]  # state.json's "state": counters, buffer, diversity, knowledge, layout
    notes: list[str] = field(default_factory=list)  # parts of the state not carried, and why

    @property
    def layout(self) -> dict[str, Any]:
        return dict(self.checkpoint_state.get("layout") or {})

    def describe(self) -> str:
        """The start-up line: where the run came from and what it carried."""
        what = "weights of both roles"
        if self.state:
            carried = ["AdamW states"] + [
                name
                for name, key in (
                    ("question buffer", "buffer"),
                    ("diversity history", "diversity"),
                    ("knowledge position", "knowledge"),
                )
                if not any(n.startswith(name) for n in self.notes) and key in self.checkpoint_state
            ]
            what += ", " + ", ".join(carried)
        line = f"initialized from {self.directory} (step {self.step}, {self.layout.get('strategy', 'none')} layout): {what}"
        if self.notes:
            line += "; not carried: " + "; ".join(self.notes)
        return line + "; this run starts at step 0"


def _role_path(cfg: Config, role: str) -> tuple[str, str]:
    role_cfg = getattr(cfg, role)
    if role_cfg.model_path:
        return role_cfg.model_path, f"{role}.model_path"
    return cfg.model.name_or_path, "model.name_or_path"


def _same_model(a: str, b: str) -> bool:
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    return a == b


def open_fork(cfg: Config) -> ForkSource | None:
    """Check ``cfg.init_from`` (None when no checkpoint is named) and record the checkpoint's absolute path and
    step in it, before any model loads. Every process calls it; the main process verifies the files."""
    import yaml

    spec = cfg.init_from
    if not spec.checkpoint:
        return None
    found = resolve(spec.checkpoint)
    if found is None:
        if run_directory_hint(spec.checkpoint) is not None:
            from pasodoble.checkpoint import latest_checkpoint

            latest = latest_checkpoint(Path(spec.checkpoint).expanduser())
            raise UserError(
                f"--init-from {spec.checkpoint} is a run directory: give one of its checkpoints "
                f"(the latest: {latest})"
            )
        raise UserError(
            f"--init-from {spec.checkpoint} is not a training checkpoint (no state.json); "
            "give RUN/checkpoints/step_N"
        )
    directory = found[0].resolve()
    out_dir = Path(cfg.run.out_dir).expanduser().resolve()
    if directory.is_relative_to(out_dir):
        raise UserError(
            f"--init-from {directory} lies inside run.out_dir={out_dir}: a forked run needs a directory of its "
            "own; choose another run.out_dir"
        )
    from pasodoble.checkpoint import read_checkpoint_state, verify_checkpoint

    dist.main_then_broadcast(lambda: verify_checkpoint(directory))  # every file against its sha256
    roles = {role: open_role(directory, role, verify=False) for role in ROLES}
    payload = read_checkpoint_state(directory)
    step = int(payload["step"])
    if spec.step is not None and int(spec.step) != step:
        raise ConfigError(
            f"init_from.step={spec.step} but {directory} is the checkpoint of step {step}; leave init_from.step "
            "out (it is recorded at start)"
        )
    config_path = roles["solver"].config_path
    try:
        source_cfg = config_from_dict(yaml.safe_load(config_path.read_text()) or {})
    except (yaml.YAMLError, ConfigError) as exc:
        raise UserError(f"run config {config_path} cannot be read ({exc})") from None
    _check_lora(cfg, source_cfg, roles, directory, state=spec.state)
    spec.checkpoint, spec.step = str(directory), step
    return ForkSource(directory, step, spec.state, roles, source_cfg, payload.get("state") or {})


def _check_lora(
    cfg: Config, source: Config, roles: dict[str, RoleCheckpoint], directory: Path, *, state: bool
) -> None:
    for role in ROLES:
        ckpt = roles[role]
        if role in cfg.model.lora.roles:
            if not ckpt.lora:
                raise UserError(
                    f"--init-from: this run trains LoRA adapters for the {role} (model.lora.roles) and "
                    f"{directory} holds its full weights; export them (pasodoble export {directory} --role "
                    f"{role} --out DIR) and start the adapters on them with {role}.model_path=DIR"
                )
            new, field_ = _role_path(cfg, role)
            old, _ = _role_path(source, role)
            if not _same_model(new, old):
                raise UserError(
                    f"--init-from: the {role}'s LoRA adapters in {directory} were trained on {old} and this "
                    f"run's {field_} is {new}; adapters start only on the base they were trained on"
                )
            a, b = source.model.lora, cfg.model.lora
            differ = [
                f"model.lora.{k} ({getattr(a, k)!r} -> {getattr(b, k)!r})"
                for k in ("rank", "alpha", "target_modules")
                if getattr(a, k) != getattr(b, k)
            ]
            if differ:
                raise UserError(
                    f"--init-from: the {role}'s LoRA adapters in {directory} differ from this run's in "
                    f"{', '.join(differ)}; use the checkpoint's LoRA settings, or export the merged model "
                    f"(pasodoble export) and start from it with {role}.model_path=DIR"
                )
        elif ckpt.lora and state:
            raise UserError(
                f"--init-state: the {role}'s AdamW state in {directory} is that of LoRA adapters and this run "
                f"trains all its weights; drop --init-state (the merged weights are used), or add {role} to "
                "model.lora.roles"
            )


def check_layout(src: ForkSource, strategy: str, processes: int) -> None:
    """``--init-state``: refuse a layout the checkpoint's learner state cannot be loaded into (as ``--resume``:
    one process and DDP interchange, FSDP2 reshards to any process count, DeepSpeed needs the same count)."""
    if not src.state:
        return
    layout = src.layout
    written = str(layout.get("strategy", "none"))
    count = int(layout.get("processes", 1))
    same = {written, strategy} <= {"none", "ddp"} or written == strategy
    if written == "deepspeed_zero2" and same and count != processes:
        same = False
    if not same:
        raise UserError(
            f"--init-state: {src.directory} was written with distributed.strategy={written} on {count} "
            f"process{'es' if count != 1 else ''} and this run uses {strategy} on {processes}; its AdamW state "
            "loads only into the layout it was written with: run with that layout, or drop --init-state "
            "(weights only, any layout)"
        )


def _short(exc: BaseException, limit: int = 240) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 4] + " ..."


def init_weights(src: ForkSource, role: str, model: torch.nn.Module, cfg: Config) -> None:
    """Weights-only fork: give ``model`` (the role's freshly loaded model, before the learner wraps or shards
    it; a ``PeftModel`` for a LoRA role) the checkpoint's weights."""
    from pasodoble import lora

    ckpt = src.roles[role]
    where = f"{src.directory}/{role}"
    _, field_ = _role_path(cfg, role)
    try:
        if lora.is_peft_model(model):  # _check_lora: a LoRA checkpoint of the same base and settings
            from pasodoble.export import _load_pt

            lora.load_adapter_state_dict(model, _load_pt(src.directory / f"{role}.pt")["model"])
        else:
            load_role_weights(ckpt, model)
    except (RuntimeError, KeyError, ValueError) as exc:
        if isinstance(exc, UserError):
            raise
        raise UserError(
            f"--init-from: checkpoint {where} does not fit this run's model ({field_}): {_short(exc)}"
        ) from None


def init_state(src: ForkSource, engine) -> None:
    """``--init-state``: load each learner as ``--resume`` does, then give it back this run's hyperparameters
    and schedule (step 0); carry the buffer, diversity history and knowledge position where they fit."""
    from pasodoble.checkpoint import verify_checkpoint  # noqa: F401  (verified in open_fork)

    for role in (engine.proposer, engine.solver):
        learner = role.learner
        optimizer = learner.scheduler.optimizer  # the torch optimizer the schedule drives (DeepSpeed's base)
        fresh_groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
        fresh_schedule = copy.deepcopy(learner.scheduler.state_dict())
        try:
            learner.load(src.directory)
        except (RuntimeError, KeyError, ValueError, FileNotFoundError) as exc:
            if isinstance(exc, UserError):
                raise
            _, field_ = _role_path(engine.cfg, role.name)
            raise UserError(
                f"--init-state: checkpoint {src.directory}/{role.name} does not fit this run's model "
                f"({field_}): {_short(exc)}"
            ) from None
        for group, fresh in zip(learner.scheduler.optimizer.param_groups, fresh_groups, strict=True):
            group.update(fresh)  # lr, betas, weight decay, initial_lr: this run's, not the checkpoint's
        learner.scheduler.load_state_dict(fresh_schedule)
        learner.step = 0
        role.backend.sync_weights(learner.unwrapped_model)
    state = src.checkpoint_state
    if "diversity" in state:
        engine.diversity.load_state_dict(state["diversity"])
    if "buffer" in state:
        engine.buffer.load_state_dict(state["buffer"])
    if "knowledge" in state:
        try:
            engine.knowledge.load_state_dict(state["knowledge"])
        except UserError as exc:
            reason = (
                str(exc).split(";")[0].replace("the checkpoint's knowledge base has", "the checkpoint's has")
            )
            src.notes.append(f"knowledge position ({reason})")
