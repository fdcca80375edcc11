"""The few collective operations dual-play needs, working single-process and under torch.distributed.

Decisions are taken on the main process and broadcast (``main_then_broadcast``); generation work is
split into contiguous shards (``shard_bounds``) and gathered in rank order (``gather_list``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch.distributed as tdist

T = TypeVar("T")


def _active() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def world_size() -> int:
    return tdist.get_world_size() if _active() else 1


def rank() -> int:
    return tdist.get_rank() if _active() else 0


def is_main() -> bool:
    return rank() == 0


def shard_bounds(n: int, *, rank_: int | None = None, world: int | None = None) -> tuple[int, int]:
    """Contiguous slice [lo, hi) of ``n`` items owned by a rank; the first ``n % world`` ranks get one more."""
    r = rank() if rank_ is None else rank_
    w = world_size() if world is None else world
    base, extra = divmod(n, w)
    lo = r * base + min(r, extra)
    return lo, lo + base + (1 if r < extra else 0)


def gather_list(items: list[T]) -> list[T]:
    """Concatenate every rank's list in rank order; every rank receives the whole list."""
    if not _active():
        return list(items)
    out: list[Any] = [None] * world_size()
    tdist.all_gather_object(out, items)
    return [x for part in out for x in part]


def barrier() -> None:
    """Wait until every rank gets here (no-op in one process)."""
    if _active():
        tdist.barrier()


def broadcast(obj: T) -> T:
    """The main process's ``obj`` on every rank."""
    if not _active():
        return obj
    box = [obj if is_main() else None]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def main_then_broadcast(fn: Callable[[], T]) -> T:
    """Run ``fn`` on the main process only and give its result to every rank.

    An exception on the main process is re-raised there and reported to the other ranks, which raise
    too instead of waiting forever in the collective.
    """
    if not _active():
        return fn()
    if is_main():
        try:
            payload: tuple[str, Any] = ("ok", fn())
        except BaseException as exc:
            broadcast(("error", f"{type(exc).__name__}: {exc}"))
            raise
        return broadcast(payload)[1]
    status, value = broadcast(None)
    if status == "error":
        raise RuntimeError(f"the main process failed: {value}")
    return value
