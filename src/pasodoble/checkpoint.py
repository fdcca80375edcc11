"""Resumable checkpoints, written atomically, the last K kept.

A checkpoint is a directory ``RUN/checkpoints/step_00000042/`` holding one file per part
(``proposer.pt``, ``solver.pt``: learner state; ``rng.pt``: Python/NumPy/torch RNG states;
``state.json``: step counters, diversity history, question buffer, knowledge-sampler position,
logger offsets) and a ``COMPLETE`` marker. It is first written as ``step_00000042.tmp`` and renamed
into place only after every file is flushed to disk, so a crash mid-write never leaves a directory
that looks complete; leftover ``.tmp`` directories are removed by the next save.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pasodoble.errors import UserError

CHECKPOINT_FORMAT = 1
_MARKER = "COMPLETE"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_bytes_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def rng_state() -> dict[str, Any]:
    """Every global RNG a run depends on."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:08d}"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
        if p.is_dir()
        and p.name.startswith("step_")
        and not p.name.endswith(".tmp")
        and (p / _MARKER).exists()
    ]
    return sorted(found, key=lambda p: p.name)


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    *,
    tensors: dict[str, Any],
    state: dict[str, Any],
    keep: int,
) -> Path:
    """Write ``tensors`` (name -> torch-serializable object) and ``state`` (JSON) for ``step`` atomically.

    Returns the final directory. Keeps the newest ``keep`` complete checkpoints.
    """
    final = checkpoint_dir(run_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob("*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp.mkdir()
    for name, obj in tensors.items():
        path = tmp / f"{name}.pt"
        with open(path, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
    payload = {"format": CHECKPOINT_FORMAT, "step": step, "parts": sorted(tensors), "state": state}
    _write_bytes_synced(tmp / "state.json", json.dumps(payload).encode())
    _write_bytes_synced(tmp / _MARKER, b"ok\n")
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def load_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a checkpoint directory: (tensors by name, state). Any damage is a UserError naming the file."""
    path = Path(path)
    if not (path / _MARKER).exists():
        raise UserError(f"checkpoint {path} is incomplete (no {_MARKER} marker); pick an earlier checkpoint")
    state_file = path / "state.json"
    try:
        payload = json.loads(state_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(
            f"checkpoint file {state_file} is unreadable or corrupt ({exc.__class__.__name__})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise UserError(
            f"checkpoint file {state_file} has format {payload.get('format') if isinstance(payload, dict) else '?'}, "
            f"this version reads format {CHECKPOINT_FORMAT}"
        )
    tensors: dict[str, Any] = {}
    for name in payload.get("parts", []):
        file = path / f"{name}.pt"
        try:
            tensors[name] = torch.load(file, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means a damaged file
            raise UserError(
                f"checkpoint file {file} is unreadable or corrupt ({exc.__class__.__name__})"
            ) from None
    return tensors, payload["state"]
