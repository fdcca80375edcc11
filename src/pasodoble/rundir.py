"""Run directories: what the trainer owns in them, replacing one safely, and one run at a time.

- A run directory is marked by ``.pasodoble-run``, written when the run starts. ``--overwrite`` deletes
  a directory only when it carries the marker, and then only the entries the trainer writes
  (``OWNED``); anything else in it makes ``--overwrite`` refuse and list what it found, so a thesis or
  a source tree that happens to sit there is never deleted.
- ``RunLock`` holds ``fcntl.flock`` on the directory itself for the life of a run (start or resume) or
  of an evaluation: a second run into the same directory, or a ``--resume`` of a run still going, is
  refused, with the PID of the holder when it recorded one in ``RUN/.lock``. Taking the lock writes
  nothing: ``.lock`` is written (``RunLock.record``) only once the caller has accepted the directory,
  so a refused run never touches a file of the user's. The lock is released by the kernel when the
  process dies, so a killed run never leaves a stale lock behind.
- ``check_shared_filesystem``: every process of a multi-process run sees ``run.out_dir`` as one
  filesystem (a collective, at the start of every run).
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
    "report",  # pasodoble report RUN_DIR
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


def check_writable(directory: Path, field: str) -> None:
    """``UserError`` (one line naming ``field``, the path and the cause) unless ``directory`` is, or can be
    created as, a directory this process may write into. Writes nothing: the nearest existing ancestor
    must be a directory (not a regular file) with write and search permission (``os.access``; as root
    that passes on a read-only directory, whose first write then fails with its own one-line error)."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise UserError(f"{field}={directory} is a file, not a directory; choose another {field}")
    probe = directory
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe != directory and not probe.is_dir():
        raise UserError(
            f"{field}={directory} cannot be created: {probe} is a file, not a directory; choose another {field}"
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(
            f"{field}={directory} is not writable ({probe}: permission denied); choose another {field}"
        )


def check_output_dir(
    directory: str | Path, field: str = "--out", *, inputs: dict[str, str] | None = None
) -> Path:
    """``check_writable`` for a command's output directory, and ``UserError`` when it is, or lies inside,
    one of ``inputs`` (option -> path, e.g. ``{"--model": MODEL_DIR}``): results would mix into it."""
    out = Path(directory).expanduser()
    check_writable(out, field)
    for option, value in (inputs or {}).items():
        src = Path(value).expanduser()
        if src.is_dir():
            o, i = out.resolve(), src.resolve()
            if o == i or i in o.parents:
                raise UserError(
                    f"{field} {out} is {'the' if o == i else 'inside the'} {option} directory {src}; "
                    f"write the results elsewhere so they do not mix with it"
                )
    return out


def remove_unstarted_run(run_dir: Path, *, remove_directory: bool) -> None:
    """Delete what a run that failed before its first step wrote into ``run_dir`` (accepted empty, so all
    of it is the trainer's, ``OWNED`` entries only), and the directory itself when the run made it."""
    for p in run_dir.iterdir():
        if _owned(p.name):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    p.unlink()
    if remove_directory:
        with contextlib.suppress(OSError):
            run_dir.rmdir()


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
    with contextlib.suppress(
        FileNotFoundError
    ):  # the PID record of the run deleted (the lock is on the directory)
        (directory / LOCK).unlink()


def write_marker(directory: Path, marker: str = MARKER) -> None:
    """Write ``marker`` into ``directory`` (kept when it already exists): the directory is ours (the
    trainer's run directory by default, the demo's with ``DEMO_MARKER``)."""
    path = directory / marker
    if not path.exists():
        path.write_text(
            json.dumps({"created": time.strftime("%Y-%m-%dT%H:%M:%S"), "pid": os.getpid()}) + "\n"
        )


class RunLock:
    """An exclusive ``flock`` on a directory (created when missing); ``UserError`` when another process
    holds it, naming its PID when that process recorded one (``record``).

    ``field`` names the option or config field that chose the directory, for the message.
    """

    def __init__(self, run_dir: Path, field: str = "run.out_dir") -> None:
        self.directory = Path(run_dir)
        self.path = self.directory / LOCK
        self.field = field
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        import fcntl

        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            try:
                holder = "PID " + (self.path.read_text(errors="replace")[:64].strip() or "?")
            except OSError:
                holder = "another process"
            raise UserError(
                f"directory {self.directory} is in use by {holder} (it holds a lock on it); wait for that "
                f"process to end or stop it, or choose another {self.field}"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def record(self) -> None:
        """Write this process's PID into ``DIR/.lock`` (for the message of a refused second process);
        call it only once the directory is accepted as this process's to write into."""
        self.path.write_text(f"{os.getpid()}\n")

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


def check_shared_filesystem(directory: str | os.PathLike) -> None:
    """Refuse a multi-process run whose ``directory`` (``run.out_dir``) is not one filesystem for all of them.

    The main process writes checkpoints and every process reads them on ``--resume``, so a multi-node
    run needs a shared filesystem. A collective: the main process writes a marker file, every process
    looks for it, and a ``UserError`` names the processes (and hosts) that cannot see it. No-op in one
    process. Run on every process at the start of a run (``Trainer``).
    """
    import socket
    import uuid

    from pasodoble import distributed as dist

    if dist.world_size() == 1:
        return
    d = Path(directory)
    token = dist.broadcast(uuid.uuid4().hex if dist.is_main() else None)
    marker = d / f".shared-fs-check-{token}"
    if dist.is_main():
        d.mkdir(parents=True, exist_ok=True)
        marker.write_text(token)
    dist.gather_list([None])  # a barrier: the marker exists before anyone looks
    try:
        seen = marker.is_file() and marker.read_text() == token
    except OSError:
        seen = False
    results = dist.gather_list([(dist.rank(), socket.gethostname(), seen)])  # every look is done
    if dist.is_main():
        marker.unlink(missing_ok=True)
    blind = [(r, host) for r, host, ok in results if not ok]
    if blind:
        who = ", ".join(f"process {r} on {host}" for r, host in blind[:4])
        raise UserError(
            f"run.out_dir={d} is not on a filesystem every node shares: {who} cannot see a file the main "
            "process wrote there. Multi-node runs need a shared filesystem (NFS, Lustre, ...) mounted at the "
            "same path on every node for run.out_dir (checkpoints are written by the main process and read "
            "by every process on --resume)"
        )
