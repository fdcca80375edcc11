"""A ``vllm.LLM`` in this process: the colocated engine (both roles, weights swapped) and the engine behind
our server. docs/scaling.md ("Generation engines") describes the colocated lifecycle.

Weight loads take one of two routes, chosen by the platform:

- **in place** (CUDA): each tensor goes through the model's ``load_weights``; nothing is copied twice.
- **reload** (CPU): vLLM's CPU build repacks linear weights after loading, so its parameters lose the
  ``weight_loader`` that ``load_weights`` needs; ``collective_rpc("reload_weights", weights_iterator=...)``
  loads them layer by layer and repacks them again. It needs every tensor of a layer in one call, so the
  server gathers an update's buckets first (``streams_weights`` is False). A tied ``lm_head`` is repacked
  separately from the embeddings: when the push leaves it out (``skip_tied``), the embedding is sent
  under its name too, or the head would keep the previous weights.
"""

from __future__ import annotations

import atexit
import copy
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable
from typing import Any

import torch

from pasodoble import distributed as dist
from pasodoble.rollout.slot import RoleSlot
from pasodoble.rollout.vllm.common import (
    DTYPES,
    Engine,
    Output,
    Request,
    check_vllm_version,
    free_device_cache,
    is_cpu_platform,
    missing_extra,
)
from pasodoble.weights import full_state_items, is_sharded

log = logging.getLogger(__name__)

# KV cache of a CPU engine when none is configured: without an explicit size, vLLM's CPU build reserves
# gpu_memory_utilization of all RAM (7 GiB at 0.3 on a 24 GiB machine).
CPU_KV_CACHE_GIB = 1.0


class LocalEngine:
    """A ``vllm.LLM`` in this process (colocated mode, and the engine behind the server).

    ``kv_cache_gib`` sizes the KV cache explicitly (vLLM's ``kv_cache_memory_bytes``); None lets
    ``gpu_memory_utilization`` decide on CUDA and uses ``CPU_KV_CACHE_GIB`` on CPU. ``enable_sleep_mode``
    is turned off on CPU (vLLM's sleep mode is CUDA-only), with a message.
    """

    def __init__(
        self,
        model_dir: str,
        *,
        dtype: str,
        gpu_memory_utilization: float,
        max_model_len: int,
        enable_sleep_mode: bool,
        enforce_eager: bool = False,
        tensor_parallel_size: int = 1,
        seed: int = 0,
        external_launcher: bool = False,
        load_format: str = "auto",
        kv_cache_gib: float | None = None,
    ) -> None:
        try:
            import vllm
        except ImportError as exc:
            raise missing_extra("rollout.backend=vllm", exc) from None
        self.version = check_vllm_version()
        # The engine core runs in this process, so the model object is reachable for in-place loads and
        # collective_rpc runs here; a user's VLLM_ENABLE_V1_MULTIPROCESSING=1 would hide it.
        if os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "0") != "0":
            log.warning("VLLM_ENABLE_V1_MULTIPROCESSING=0 is forced for the in-process engine")
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        self.cpu = is_cpu_platform()
        if self.cpu and enable_sleep_mode:
            print(
                "pasodoble: vllm.sleep_between_steps is off on CPU (vLLM's sleep mode is CUDA-only): the engine "
                "stays awake between generations",
                file=sys.stderr,
                flush=True,
            )
            enable_sleep_mode = False
        self.sleep_mode = enable_sleep_mode
        if kv_cache_gib is None and self.cpu:
            kv_cache_gib = CPU_KV_CACHE_GIB
        self.tied = _tied_embeddings(model_dir)
        kwargs: dict[str, Any] = {
            "model": model_dir,
            "tokenizer": model_dir,
            "dtype": dtype,
            "gpu_memory_utilization": gpu_memory_utilization,
            "max_model_len": max_model_len,
            "enable_sleep_mode": enable_sleep_mode,
            "enforce_eager": enforce_eager,
            "enable_prefix_caching": True,
            "tensor_parallel_size": tensor_parallel_size,
            "seed": seed,
            "load_format": load_format,
        }
        if kv_cache_gib is not None:
            kwargs["kv_cache_memory_bytes"] = int(kv_cache_gib * 1024**3)
        if external_launcher:  # one engine per torchrun process (colocated); vLLM reuses the torch env
            kwargs["distributed_executor_backend"] = "external_launcher"
        self.llm = vllm.LLM(**kwargs)
        # CPU: weights are repacked after loading; only vLLM's layerwise reload can replace them
        self.reload = self.cpu
        self.streams_weights = not self.reload  # the server may load an update bucket by bucket

    def generate(self, requests: list[Request]) -> list[list[Output]]:
        from vllm import SamplingParams as VSamplingParams
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=list(r["prompt_token_ids"])) for r in requests]
        params = []
        for r in requests:
            s = r["sampling"]
            params.append(
                VSamplingParams(
                    n=s["n"],
                    temperature=s["temperature"],
                    top_p=s["top_p"],
                    top_k=s["top_k"] if s["top_k"] > 0 else -1,
                    max_tokens=s["max_tokens"],
                    seed=s["seed"],
                    logprobs=0 if s["logprobs"] else None,
                    stop_token_ids=s["stop_token_ids"],
                    detokenize=False,
                )
            )
        results = self.llm.generate(prompts, params, use_tqdm=False)
        return [
            [output_record(c, bool(r["sampling"]["logprobs"])) for c in res.outputs]
            for res, r in zip(results, requests, strict=True)
        ]

    def _model(self):
        """The engine's torch model when it lives in this process (external launcher or in-process V1)."""
        executor = self.llm.llm_engine.model_executor
        worker = getattr(executor, "driver_worker", None)
        for path in (("worker", "model_runner", "model"), ("model_runner", "model")):
            obj = worker
            for attr in path:
                obj = getattr(obj, attr, None)
            if obj is not None and hasattr(obj, "load_weights"):
                return obj
        return None

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Load one complete set of Hugging Face-named tensors (see the module docstring for the routes)."""
        if self.reload:
            items = [(n, t.detach().cpu()) for n, t in weights]
            names = {n for n, _ in items}
            if self.tied and "lm_head.weight" not in names:
                embed = dict(items).get("model.embed_tokens.weight")
                if embed is not None:
                    items.append(("lm_head.weight", embed))
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": items})
            return
        model = self._model()
        if model is not None:
            for name, tensor in weights:  # one tensor at a time: no second full copy of the model
                model.load_weights(weights=[(name, tensor)])
            return
        # Engine workers in other processes (tensor parallelism): send the tensors by RPC.
        batch = [(n, t.detach().cpu()) for n, t in weights]
        self.llm.collective_rpc(_worker_load_weights, args=(batch,))

    def reset_prefix_cache(self) -> None:
        """Drop cached prefixes computed with the previous weights; vLLM answers False while requests hold
        blocks (none should here), which would keep stale prefixes: retried briefly, then an error."""
        for _ in range(50):
            if self.llm.reset_prefix_cache() is not False:
                return
            time.sleep(0.01)
        raise RuntimeError(
            "vLLM refused to reset its prefix cache (requests still hold blocks): prefixes computed with the "
            "previous weights would be reused"
        )

    def sleep(self, level: int = 2) -> None:
        if self.sleep_mode:
            self.llm.sleep(level=level)

    def wake_up(self, tags: list[str] | None = None) -> None:
        if self.sleep_mode:
            self.llm.wake_up(tags=tags)


def _tied_embeddings(model_dir: str) -> bool:
    """Whether the model directory's config ties the output head to the input embeddings."""
    path = os.path.join(model_dir, "config.json")
    if not os.path.isfile(path):
        return False  # a hub name: vLLM resolves it; such engines are not pushed tied heads on CPU
    with open(path, encoding="utf-8") as fh:
        cfg = json.load(fh)
    text = cfg.get("text_config") or {}
    return bool(cfg.get("tie_word_embeddings", text.get("tie_word_embeddings", False)))


def _worker_load_weights(worker, weights: list[tuple[str, torch.Tensor]]) -> None:
    """Runs inside each vLLM worker (``collective_rpc``): load HF-named tensors; TP sharding is vLLM's."""
    device = next(worker.model_runner.model.parameters()).device
    worker.model_runner.model.load_weights(weights=[(n, t.to(device)) for n, t in weights])


def output_record(c, with_logprobs: bool) -> Output:
    """A vLLM ``CompletionOutput`` as a plain record (what the server sends and the backend reads)."""
    ids = list(c.token_ids)
    logprobs = None
    if with_logprobs and c.logprobs is not None:
        logprobs = []
        for tok, entry in zip(ids, c.logprobs, strict=False):  # one dict {token_id: Logprob} per token
            lp = entry[tok]
            logprobs.append(float(getattr(lp, "logprob", lp)))
    return {"token_ids": ids, "finish_reason": str(c.finish_reason), "logprobs": logprobs}


class ColocatedEngine(RoleSlot):
    """One engine of this process serving both roles: a ``RoleSlot`` keyed by role name.

    ``run(role, model, requests)`` makes the engine hold ``role``'s current weights (loading them from
    ``model`` when it holds another role's, none, or stale ones: ``invalidate(role)`` after an update),
    generates, and with ``sleep_between_steps`` puts it to sleep at level 2. Every process runs the same
    sequence of calls, so the loads (collectives under FSDP2) line up; ``requests`` may be empty. Returns
    the outputs and the seconds spent loading weights.

    ``pin(role, model)`` (every process) loads the role's weights and keeps the engine awake until the
    next collective ``run``: the main process can then generate alone (evaluation) without a reload,
    which would need the other processes' shards.
    """

    def __init__(self, engine: Engine, *, sleep_between_steps: bool, dtype: torch.dtype | None) -> None:
        super().__init__()
        self.engine = engine
        self.sleep_between_steps = sleep_between_steps and getattr(engine, "sleep_mode", True)
        self.dtype = dtype
        self.weights_awake = self.kv_awake = True
        self.pinned = False
        if self.sleep_between_steps:  # nothing useful is loaded yet: give the memory to the learners
            self.sleep()

    def sleep(self) -> None:
        self.engine.sleep(level=2)
        self.weights_awake = self.kv_awake = False
        self.forget()  # level 2 discards the weights

    def _load(self, role: str, model: torch.nn.Module) -> None:
        """Wake the weights if asleep, load ``model``'s full weights, drop prefixes of the previous ones."""
        if not self.weights_awake:
            free_device_cache()
            self.engine.wake_up(tags=["weights"])
            self.weights_awake = True
        self.engine.load_weights(full_state_items(model, dtype=self.dtype, skip_tied=True))
        self.engine.reset_prefix_cache()

    def _ensure(self, role: str, model: torch.nn.Module, local_only: bool) -> float:
        if local_only and self.holds != role and is_sharded(model):
            raise RuntimeError(
                f"the colocated vLLM engine must load the {role}'s FSDP2-sharded weights, a collective, but "
                "this generation runs on one process only; call pin() on every process first"
            )
        seconds = self.ensure(role, model)
        if not self.kv_awake:
            free_device_cache()
            self.engine.wake_up(tags=["kv_cache"])
            self.kv_awake = True
        return seconds

    def pin(self, role: str, model: torch.nn.Module) -> float:
        """Hold ``role``'s weights awake until the next collective ``run`` (every process calls it)."""
        seconds = self._ensure(role, model, local_only=False)
        self.pinned = True
        return seconds

    def run(
        self,
        role: str,
        model: torch.nn.Module,
        requests: list[Request],
        *,
        local_only: bool = False,
    ) -> tuple[list[list[Output]], float]:
        if not local_only:
            self.pinned = False  # a collective generation ends any pin
        seconds = self._ensure(role, model, local_only)
        outputs = self.engine.generate(requests) if requests else []
        if self.sleep_between_steps and not self.pinned:
            self.sleep()
        return outputs, seconds


# The colocated engine of this process (built by the first colocated backend, shared by the second).
_COLOCATED: dict[str, ColocatedEngine] = {}


def architecture_config_dir(model: torch.nn.Module, tokenizer) -> str:
    """A temporary directory with ``model``'s config (``architectures`` always set: without it vLLM takes a
    ``Qwen3Model`` for a pooling model), its generation config and the tokenizer; removed at exit."""
    from pasodoble import lora

    base = model.get_base_model() if lora.is_peft_model(model) else model
    config = copy.deepcopy(base.config)
    if not getattr(config, "architectures", None):
        config.architectures = [type(base).__name__]
    tmp = tempfile.mkdtemp(prefix="pasodoble-vllm-config-")
    atexit.register(shutil.rmtree, tmp, True)
    config.save_pretrained(tmp)
    if getattr(base, "generation_config", None) is not None:
        base.generation_config.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    return tmp


def colocated_engine(
    model: torch.nn.Module,
    tokenizer,
    *,
    vllm_cfg,
    dtype: str,
    max_model_len: int,
    seed: int,
) -> ColocatedEngine:
    """This process's colocated engine, built on first use from the architecture's config with dummy
    weights (the role's weights are loaded before its first generation: nothing is read from disk)."""
    if "engine" in _COLOCATED:
        return _COLOCATED["engine"]
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit and max_model_len > limit:  # vLLM refuses a context longer than the model's positions
        log.info("vLLM context length %d capped at the model's %d positions", max_model_len, limit)
        max_model_len = int(limit)
    engine = LocalEngine(
        architecture_config_dir(model, tokenizer),
        dtype=dtype,
        gpu_memory_utilization=vllm_cfg.gpu_memory_utilization,
        max_model_len=max_model_len,
        enable_sleep_mode=vllm_cfg.sleep_between_steps,
        enforce_eager=vllm_cfg.enforce_eager,
        seed=seed,
        external_launcher=dist.world_size() > 1,
        load_format="dummy",
        kv_cache_gib=vllm_cfg.kv_cache_gib,
    )
    _COLOCATED["engine"] = ColocatedEngine(
        engine, sleep_between_steps=vllm_cfg.sleep_between_steps, dtype=DTYPES.get(dtype)
    )
    if dist.is_main():  # the start-up line names what runs
        route = "layerwise reload" if engine.reload else "in-place loads"
        print(
            f"pasodoble: vLLM engine: {engine.version}, colocated on {'CPU' if engine.cpu else 'CUDA'}, "
            f"{dtype}, sleep mode {'on' if engine.sleep_mode else 'off'}, weights by {route}",
            file=sys.stderr,
            flush=True,
        )
    return _COLOCATED["engine"]
