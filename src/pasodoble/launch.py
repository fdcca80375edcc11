"""`accelerate launch` detection: its processes are honoured, or the command is refused (issue 24).

Multi-process ``pasodoble train`` and ``pasodoble sft train`` are launched with ``torchrun`` (each
process reads ``RANK``/``WORLD_SIZE``; ``parallel.build_accelerator`` picks the layout from
``distributed.strategy`` / ``--strategy`` and ``model.dtype`` / ``--dtype``). What ``accelerate launch``
does (accelerate 1.x, ``accelerate/commands/launch.py`` and ``utils/launch.py``):

- ``--multi_gpu`` (or ``--num_processes N`` with more than one GPU visible, or a config file naming a
  multi-GPU setup): it runs torch's elastic launcher, i.e. torchrun, in-process. Every worker gets
  ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` = N, ``MASTER_ADDR``/``MASTER_PORT`` plus accelerate's own
  variables (``ACCELERATE_MIXED_PRECISION``, ``ACCELERATE_DYNAMO_BACKEND``, ...). The processes it asks
  for exist: **honoured**, as a torchrun launch.
- otherwise (``--cpu``, one GPU, no GPU): its "simple launcher" starts **one** process with
  ``ACCELERATE_USE_CPU``, ``ACCELERATE_MIXED_PRECISION``, ``ACCELERATE_DYNAMO_BACKEND`` and, when more
  than one process was asked for, ``MASTER_ADDR``/``MASTER_PORT``, but no ``RANK`` or ``WORLD_SIZE``
  (``accelerate launch --cpu --num_processes 2`` starts one process: measured on our machines). Where
  more processes were asked for than started, the command is **refused** with the torchrun command
  that starts them.
- ``--mixed_precision fp16|bf16``, ``--use_fsdp``, ``--use_deepspeed``, ``--use_megatron_lm`` or a
  dynamo backend would change the run behind its config's back (accelerate reads them from the
  environment): **refused**, naming the config field that does it here.

How many processes were asked for is read from the launcher's command line (``/proc/<ppid>/cmdline``:
``--num_processes N``), else inferred (``MASTER_ADDR`` without ``WORLD_SIZE``: more than one).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

from pasodoble.errors import UserError

# set by both of accelerate's launchers (simple and multi-GPU) in every process they start
ACCELERATE_MARKERS = ("ACCELERATE_DYNAMO_BACKEND", "ACCELERATE_MIXED_PRECISION")
# commands that run several processes under torchrun; the others run in one process whatever launches them
MULTI_PROCESS = {"train": "train", "sft": "sft train"}


def launched_by_accelerate(env: Mapping[str, str]) -> bool:
    """Whether ``accelerate launch`` started this process (its variables are in the environment)."""
    return any(name in env for name in ACCELERATE_MARKERS)


def requested_processes(cmdline: Sequence[str] | None) -> int | None:
    """``--num_processes`` (or ``--num-processes``, ``=N`` forms too) of a launcher's command line."""
    if not cmdline:
        return None
    args = list(cmdline)
    for i, arg in enumerate(args):
        for flag in ("--num_processes", "--num-processes"):
            value = None
            if arg == flag and i + 1 < len(args):
                value = args[i + 1]
            elif arg.startswith(flag + "="):
                value = arg[len(flag) + 1 :]
            if value is not None:
                try:
                    return int(value)
                except ValueError:
                    return None
    return None


def parent_cmdline() -> list[str] | None:
    """The parent process's command line (Linux ``/proc``), None where it cannot be read."""
    try:
        raw = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
    except OSError:
        return None
    parts = [p.decode("utf-8", "replace") for p in raw.split(b"\0") if p]
    return parts or None


def torchrun_command(argv: Sequence[str], processes: int | None) -> str:
    """``torchrun --nproc_per_node N -m pasodoble.cli ARGV...`` (``N`` literally when unknown)."""
    n = str(processes) if processes and processes > 1 else "N"
    return f"torchrun --nproc_per_node {n} -m pasodoble.cli {shlex.join(argv)}"


def check_launcher(
    command: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    launcher_cmdline: Sequence[str] | None = None,
) -> None:
    """Refuse (``UserError``, one line) an ``accelerate launch`` whose processes or settings would not be
    honoured (see the module docstring); return quietly otherwise, and always outside accelerate.

    ``command`` is the pasodoble command (``train``, ``sft``, ...) and ``argv`` its whole argument list
    (``['train', 'cfg.yaml', ...]``); ``env`` and ``launcher_cmdline`` default to this process's.
    """
    env = os.environ if env is None else env
    if command not in MULTI_PROCESS or not launched_by_accelerate(env):
        return
    if command == "sft" and (not argv[1:] or argv[1] != "train"):
        return  # sft build-data runs in one process
    if launcher_cmdline is None:
        launcher_cmdline = parent_cmdline()
    asked = requested_processes(launcher_cmdline)
    started = int(env.get("WORLD_SIZE", "1") or 1) if "RANK" in env else 1
    torchrun = torchrun_command(argv, asked if asked is not None else started)
    name = f"pasodoble {MULTI_PROCESS[command]}"
    if asked is not None:
        short = asked > started
    else:  # no command line to read: the simple launcher sets MASTER_ADDR only when asked for several
        short = "RANK" not in env and "MASTER_ADDR" in env
    if short:
        wanted = f"{asked} processes" if asked is not None else "several processes"
        raise UserError(
            f"accelerate launch asked for {wanted} but started {started} (its simple launcher, used with --cpu "
            f"or fewer than two GPUs, starts one); {name} is launched with torchrun: {torchrun}"
        )
    dtype = "--dtype bfloat16" if command == "sft" else "model.dtype=bfloat16"
    layout = "--strategy" if command == "sft" else "distributed.strategy"
    settings = [
        (
            env.get("ACCELERATE_MIXED_PRECISION", "no").lower() not in ("no", ""),
            f"--mixed_precision {env.get('ACCELERATE_MIXED_PRECISION')} (set the precision with {dtype})",
        ),
        (
            env.get("ACCELERATE_USE_FSDP", "").lower() == "true",
            f"--use_fsdp (set the sharding with {layout} fsdp2)",
        ),
        (
            env.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true",
            f"--use_deepspeed (set the sharding with {layout} deepspeed_zero2)",
        ),
        (env.get("ACCELERATE_USE_MEGATRON_LM", "").lower() == "true", "--use_megatron_lm (not supported)"),
        (
            env.get("ACCELERATE_DYNAMO_BACKEND", "NO").upper() not in ("NO", ""),
            f"--dynamo_backend {env.get('ACCELERATE_DYNAMO_BACKEND')} (not supported)",
        ),
    ]
    ignored = [what for on, what in settings if on]
    if ignored:
        raise UserError(
            f"accelerate launch {'; '.join(ignored)} would change the run behind its config; launch {name} "
            f"with torchrun instead: {torchrun}"
        )
