"""Run directories: what the trainer owns in them, replacing one safely, and one run at a time.

- A run directory is marked by ``.pasodoble-run``, written when the run starts. ``--overwrite`` deletes
  a directory only when it carries the marker, and then only the entries the trainer writes
  (``OWNED``); anything else in it makes ``--overwrite`` refuse and list what it found, so a thesis or
  a source tree that happens to sit there is never deleted.
- ``RunLock`` holds ``fcntl.flock`` on ``RUN/.lock`` for the life of a run (start or resume): a second
  run into the same directory, or a ``--resume`` of a run still going, is refused with the PID that
  holds it. The lock is released by the kernel when the process dies, so a killed run never leaves a
  stale lock behind.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import shutil
import time
from pathlib import Path

from pasodoble.errors import UserError

MARKER = ".pasodoble-run"
LOCK = ".lock"
# What a training run writes into its directory (names or fnmatch patterns of top-level entries).
OWNED: tuple[str, ...] = (
    MARKER,
    LOCK,
    "config.yaml",
    "metrics.jsonl",
    "rollouts.jsonl",
    "decisions.rank*.jsonl",
    "checkpoints",
    "eval",
    "proposer_final",
    "solver_final",
    "tensorboard",
    "wandb",
    "trackers",
    "trackers.json",
)


def _owned(name: str, owned: tuple[str, ...] = OWNED) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in owned)


def check_out_dir(run_dir: Path, field: str = "run.out_dir") -> None:
    """A run directory must be a directory or not exist yet."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{field}={run_dir} is a file, not a directory; choose another {field}")


def clear_run_dir(run_dir: Path, *, locked: bool = False) -> None:
    """``--overwrite``: delete what an earlier run wrote into ``run_dir``, and nothing else.

    Refuses (``UserError``) a non-empty directory without the marker, and one holding entries the
    trainer does not write, listing them. ``locked``: the caller holds the directory's ``RunLock``
    already (otherwise it is taken for the deletion, so a live run's directory is never deleted).
    """
    check_out_dir(run_dir)
    with contextlib.nullcontext() if locked or not run_dir.exists() else RunLock(run_dir):
        clear_owned(run_dir, marker=MARKER, owned=OWNED, writer="pasodoble train", field="run.out_dir")


def clear_owned(directory: Path, *, marker: str, owned: tuple[str, ...], writer: str, field: str) -> None:
    """Delete the entries of ``directory`` that ``writer`` wrote (``owned``), when its ``marker`` is there.

    An empty or missing directory is left alone. ``UserError`` (naming ``field``) for a non-empty
    directory without the marker, and for one holding anything else, listed.
    """
    if not directory.exists():
        return
    entries = sorted((p for p in directory.iterdir() if p.name != LOCK), key=lambda p: p.name)
    if not entries:
        return
    if not (directory / marker).is_file():
        raise UserError(
            f"--overwrite refuses to delete {directory}: it has no {marker} marker, so it was not written by "
            f"{writer}; choose another {field} or delete it yourself"
        )
    unknown = [p.name for p in entries if not _owned(p.name, owned)]
    if unknown:
        shown = ", ".join(unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
        raise UserError(
            f"--overwrite refuses to delete {directory}: it holds files {writer} did not write "
            f"({shown}); move them away or choose another {field}"
        )
    for p in entries:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def write_marker(directory: Path, marker: str = MARKER) -> None:
    """Write ``marker`` into ``directory`` (kept when it already exists): the directory is ours (the
    trainer's run directory by default, the demo's with ``DEMO_MARKER``)."""
    path = directory / marker
    if not path.exists():
        path.write_text(
            json.dumps({"created": time.strftime("%Y-%m-%dT%H:%M:%S"), "pid": os.getpid()}) + "\n"
        )


class RunLock:
    """An exclusive ``flock`` on ``RUN/.lock``; ``UserError`` naming the holder's PID when taken."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise UserError(
                f"run directory {self.path.parent} is in use by PID {holder} (it holds {self.path}); wait "
                "for that run to end or stop it, or choose another run.out_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
