"""Resumable checkpoints, written atomically, verified on load, the last K kept.

A checkpoint is a directory ``RUN/checkpoints/step_00000042/`` holding the parts of the run's state
(for training: each learner's files, see ``Learner.save``, and one RNG file per process), a
``state.json`` (step counters, diversity history, question buffer, knowledge-sampler position, logger
offsets, and the **sha256 of every other file**) and a ``COMPLETE`` marker. It is first written as
``step_00000042.tmp`` and renamed into place only after every file is flushed to disk, so a crash
mid-write never leaves a directory that looks complete; leftover ``.tmp`` directories are removed by
the next save.

Loading never runs code from the files: everything is tensors or plain data, read with
``torch.load(..., weights_only=True)`` (RNG states included), and every file's sha256 is checked
against ``state.json`` first, so bytes changed inside a tensor are caught before they reach a model;
the error names the file and the previous checkpoint to fall back to. A sharded (FSDP2) checkpoint's
``.metadata`` is a pickle that DCP itself would unpickle with no restriction: ``read_dcp_metadata`` and
``safe_dcp_reader`` admit DCP's own classes only (used by the learner's resume and by ``export``).

``save_checkpoint`` (one process: ``begin_checkpoint``, ``torch.save`` of each part,
``finish_checkpoint``) is what ``pasodoble sft`` uses; the trainer calls the three steps itself,
with every process writing its share between them.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pasodoble.errors import UserError

CHECKPOINT_FORMAT = 2
_MARKER = "COMPLETE"
_STATE = "state.json"


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
    """Every global RNG a process depends on, as tensors and plain data (loadable with weights_only)."""
    version, mt, gauss = random.getstate()
    key, np_mt, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss_next": gauss},
        "numpy": {
            "key": str(key),
            "state": torch.from_numpy(np.asarray(np_mt, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(x) for x in py["state"].tolist()), py["gauss_next"]))
    npy = state["numpy"]
    np.random.set_state(
        (
            npy["key"],
            npy["state"].numpy().astype(np.uint32),
            int(npy["pos"]),
            int(npy["has_gauss"]),
            float(npy["cached_gaussian"]),
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


def checkpoint_files(directory: Path) -> list[str]:
    """Every file of a checkpoint directory but its state.json and marker, as sorted relative paths."""
    return sorted(
        str(p.relative_to(directory))
        for p in directory.rglob("*")
        if p.is_file() and p.name not in (_STATE, _MARKER)
    )


def begin_checkpoint(run_dir: str | Path, step: int) -> Path:
    """Create the empty ``.tmp`` directory of ``step``'s checkpoint (stale ``.tmp`` ones are removed)."""
    final = checkpoint_dir(run_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob("*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp.mkdir()
    return tmp


def finish_checkpoint(
    run_dir: str | Path,
    step: int,
    *,
    state: dict[str, Any],
    keep: int,
    parts: list[str] | None = None,
    hashes: dict[str, str] | None = None,
) -> Path:
    """Seal ``step``'s ``.tmp`` directory: state.json with every file's sha256, the marker, the rename.

    ``hashes`` (relative path -> sha256) may be computed by several processes beforehand; files it
    does not cover are hashed here. ``parts`` names the ``NAME.pt`` files ``load_checkpoint`` returns.
    Keeps the newest ``keep`` complete checkpoints; returns the final directory.
    """
    final = checkpoint_dir(run_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    hashes = dict(hashes or {})
    for rel in checkpoint_files(tmp):
        if rel not in hashes:
            hashes[rel] = sha256_file(tmp / rel)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "step": step,
        "parts": sorted(parts or []),
        "files": dict(sorted(hashes.items())),
        "state": state,
    }
    _write_bytes_synced(tmp / _STATE, json.dumps(payload).encode())
    _write_bytes_synced(tmp / _MARKER, b"ok\n")
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    *,
    tensors: dict[str, Any],
    state: dict[str, Any],
    keep: int,
) -> Path:
    """Write ``tensors`` (name -> tensors and plain data) and ``state`` (JSON) for ``step`` atomically.

    One process. Returns the final directory. Keeps the newest ``keep`` complete checkpoints.
    """
    tmp = begin_checkpoint(run_dir, step)
    for name, obj in tensors.items():
        with open(tmp / f"{name}.pt", "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
    return finish_checkpoint(run_dir, step, state=state, keep=keep, parts=list(tensors))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def _fallback_hint(path: Path) -> str:
    earlier = [p for p in list_checkpoints(path.parent.parent) if p.name < path.name]
    if earlier:
        return (
            f"; fall back to the previous checkpoint {earlier[-1]} by moving {path} out of "
            f"{path.parent} (then resume again)"
        )
    return "; no earlier checkpoint is left to fall back to"


def read_checkpoint_state(path: str | Path) -> dict[str, Any]:
    """The checkpoint's state.json payload, checked for completeness and format (no file verified)."""
    path = Path(path)
    if not (path / _MARKER).exists():
        raise UserError(f"checkpoint {path} is incomplete (no {_MARKER} marker); pick an earlier checkpoint")
    state_file = path / _STATE
    try:
        payload = json.loads(state_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(
            f"checkpoint file {state_file} is unreadable or corrupt ({exc.__class__.__name__})"
            + _fallback_hint(path)
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else "?"
        raise UserError(
            f"checkpoint file {state_file} has format {found}, this version reads format "
            f"{CHECKPOINT_FORMAT} (checkpoints of earlier versions cannot be resumed; start a new run)"
        )
    return payload


def verify_checkpoint(path: str | Path, files: list[str] | None = None) -> None:
    """Check ``files`` (default: all) of a checkpoint against the sha256 recorded in its state.json.

    Raises ``UserError`` naming the first missing, extra-damaged or modified file and the previous
    checkpoint to fall back to.
    """
    path = Path(path)
    recorded = read_checkpoint_state(path)["files"]
    for rel in recorded if files is None else files:
        file = path / rel
        if not file.is_file():
            raise UserError(f"checkpoint file {file} is missing" + _fallback_hint(path))
        if sha256_file(file) != recorded[rel]:
            raise UserError(
                f"checkpoint file {file} does not match the sha256 recorded in {path / _STATE} "
                "(damaged or modified)" + _fallback_hint(path)
            )


def load_checkpoint(path: str | Path, *, verify: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a checkpoint directory: (its ``parts`` by name, state). Any damage is a UserError naming the file.

    Files are verified against their sha256 first (``verify=False`` skips that when the caller has
    verified them already); parts are read with ``weights_only=True``.
    """
    path = Path(path)
    payload = read_checkpoint_state(path)
    if verify:
        verify_checkpoint(path)
    tensors: dict[str, Any] = {}
    for name in payload.get("parts", []):
        file = path / f"{name}.pt"
        try:
            tensors[name] = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means a damaged file
            raise UserError(
                f"checkpoint file {file} is unreadable or corrupt ({exc.__class__.__name__}: "
                f"{str(exc)[:120]})" + _fallback_hint(path)
            ) from None
    return tensors, payload["state"]


def write_error(exc: BaseException, path: str | Path, what: str) -> UserError | None:
    """A one-line ``UserError`` for a failed write of ``what`` at ``path`` (disk full, read-only, a file in
    the way), or None when ``exc`` is no write error.

    torch reports a full disk as ``RuntimeError: [enforce fail at inline_container.cc] unexpected pos``
    and safetensors as ``SafetensorError``, with the ``OSError`` (when any) in their chain.
    """
    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in chain and len(chain) < 10:
        chain.append(e)
        e = e.__cause__ or e.__context__
    os_error = next((x for x in chain if isinstance(x, OSError)), None)
    text = " ".join(str(x) for x in chain)
    writer_error = type(exc).__name__ == "SafetensorError" or any(
        key in text for key in ("inline_container", "PytorchStreamWriter", "file write failed")
    )
    if os_error is None and not writer_error:
        return None
    where = Path(getattr(os_error, "filename", None) or path)
    if os_error is not None and os_error.strerror:
        cause = os_error.strerror
    else:
        probe = Path(path)
        while not probe.exists() and probe.parent != probe:
            probe = probe.parent
        try:
            full = shutil.disk_usage(probe).free < 1 << 20
        except OSError:
            full = False
        cause = "no space left on device" if full else f"write failed ({' '.join(str(exc).split())[:120]})"
    return UserError(f"cannot write {what} {where}: {cause}")


def save_collective(
    run_dir: str | Path,
    step: int,
    *,
    write: Callable[[Path], None],
    state: Callable[[], dict[str, Any]],
    keep: int,
) -> Path:
    """Write ``step``'s checkpoint from every process (each calls this; one process works alike).

    The main process creates the ``.tmp`` directory; every process then writes its parts with
    ``write(tmp)`` (a learner's sharded state, say) and its own RNG state (``rng.rankR.pt``); the files
    are hashed by all processes, a share each (a 4 B-parameter checkpoint holds ~64 GB); the main process
    evaluates ``state()`` and seals the checkpoint. Returns the final directory on every process.
    """
    from pasodoble import distributed as dist

    tmp = Path(dist.main_then_broadcast(lambda: str(begin_checkpoint(run_dir, step))))
    write(tmp)
    with open(tmp / f"rng.rank{dist.rank()}.pt", "wb") as fh:
        torch.save(rng_state(), fh)
        fh.flush()
        os.fsync(fh.fileno())
    dist.barrier()
    files = dist.broadcast(checkpoint_files(tmp) if dist.is_main() else None)
    lo, hi = dist.shard_bounds(len(files))
    mine = {rel: sha256_file(tmp / rel) for rel in files[lo:hi]}
    hashes = {rel: h for part in dist.gather_list([mine]) for rel, h in part.items()}
    final = dist.main_then_broadcast(
        lambda: str(finish_checkpoint(run_dir, step, state=state(), keep=keep, hashes=hashes))
    )
    return Path(final)


def load_rng(path: str | Path) -> None:
    """Restore this process's RNG states from a checkpoint (rank 0's when it was written on fewer)."""
    from pasodoble import distributed as dist

    path = Path(path)
    file = path / f"rng.rank{dist.rank()}.pt"
    if not file.is_file():
        file = path / "rng.rank0.pt"
    set_rng_state(torch.load(file, map_location="cpu", weights_only=True))


# --------------------------------------------------------------------------------------------------
# Sharded (DCP) checkpoints from elsewhere: their metadata pickle is read with DCP's own classes only

# Globals a DCP ``.metadata`` pickle may name: DCP's metadata classes, torch sizes, dtypes and layouts, paths.
_DCP_METADATA_MODULES = ("torch.distributed.checkpoint.metadata", "torch.distributed.checkpoint.filesystem")
_DCP_METADATA_GLOBALS = {
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
    ("collections", "OrderedDict"),
    ("pathlib", "PosixPath"),
    ("pathlib", "PurePosixPath"),
    ("pathlib", "WindowsPath"),
    ("pathlib", "PureWindowsPath"),
}


class _DCPMetadataUnpickler(pickle.Unpickler):
    """Unpickles a DCP ``.metadata`` file, refusing any global but the ones its format uses."""

    def find_class(self, module: str, name: str):
        if (module, name) in _DCP_METADATA_GLOBALS:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module in _DCP_METADATA_MODULES:
            found = super().find_class(module, name)
            if isinstance(found, type) and found.__module__ == module:
                return found
        raise pickle.UnpicklingError(
            f"the metadata names {module}.{name}, which a DCP checkpoint never holds"
        )


def safe_dcp_reader(path: str | Path):
    """A DCP ``FileSystemReader`` whose ``.metadata`` (a pickle) is read by ``read_dcp_metadata``."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta

    class SafeMetadataReader(FileSystemReader):
        """DCP's file reader; its metadata goes through ``_DCPMetadataUnpickler`` (tensors are read by DCP
        itself with ``weights_only=True``)."""

        def read_metadata(self, *args: Any, **kwargs: Any):
            rank = kwargs.get("rank")
            metadata = read_dcp_metadata(
                Path(self.path) / (".metadata" if rank is None else f"__{rank}.metadata")
            )
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return SafeMetadataReader(path)


def read_dcp_metadata(path: str | Path):
    """A DCP ``.metadata`` file, unpickled with DCP's own classes only (a crafted one raises
    ``pickle.UnpicklingError`` instead of running code)."""
    with open(path, "rb") as fh:
        return _DCPMetadataUnpickler(fh).load()
