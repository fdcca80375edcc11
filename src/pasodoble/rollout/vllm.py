"""vLLM rollout backend (GPU): one colocated engine per process, our engine server, or TRL's client.

The only module that imports ``vllm`` (inside ``LocalEngine``; TRL's client imports it too, inside
``TRLEngine``). The HTTP server and client, the role switching and the collectives are testable
without a GPU.

**Colocated** (``vllm.mode=colocated``): every training process holds **one** ``vllm.LLM`` for both
roles (``ColocatedEngine``). vLLM's sleep-mode allocator belongs to the process, so two engines in one
process cannot sleep independently; and both roles share one architecture. The engine starts from the
model's config with dummy weights (``load_format="dummy"``: nothing is written to or read from disk);
the role's weights are loaded right before its first generation. Before each generation the engine
holds the generating role's current weights: when it holds the other role's, stale ones, or none
(after ``sleep``), it wakes the weights (``wake_up(tags=["weights"])``), loads the role's full tensors
(FSDP2 shards gathered: a collective, so every process calls ``generate`` in the same order, with an
empty prompt list where it has none) and resets the prefix cache; then it wakes the KV cache
(``wake_up(tags=["kv_cache"])``) and generates. With ``vllm.sleep_between_steps`` it then sleeps at
level 2 (weights and KV cache discarded), so the learners get the memory back. ``gc.collect()`` and
``torch.cuda.empty_cache()`` run before every wake-up: the training allocator's cache otherwise holds
the memory the engine maps. ``sync_weights`` only marks the role's weights stale; the load happens at
its next generation and its seconds are reported by ``pop_sync_seconds`` (``time/weight_sync``).

**Server** (``vllm.mode=server``): one engine per role runs ``python -m pasodoble.rollout.vllm serve``
on its own GPUs. The main training process sends **one** request per role per step: every process's
prompts are gathered, generated in one ``LLM.generate`` call and the results scattered back. Weights
are pushed from the main process after every update *and when the backend is built* (step 0), so an
engine started from the base model never serves it while the learners train a cold-start checkpoint.
The protocol (JSON unless stated; every client call has a timeout and raises on failure):

- ``GET /health`` -> ``{"status": "ok", "model", "weights_hash", "weights_version"}``. After each push
  the client checks that ``weights_hash`` (sha256 of the pushed bytes, in order) equals its own.
- ``POST /generate`` ``{"requests": [{"prompt_token_ids": [...], "sampling": {...}}]}`` ->
  ``{"outputs": [[{"token_ids": [...], "finish_reason": "stop"|"length", "logprobs": [...]|null}]]}``;
  ``sampling`` has ``n, temperature, top_p, top_k, max_tokens, seed, logprobs (bool), stop_token_ids``.
- ``POST /update_weights`` (headers ``X-Update-Id``, ``X-Bucket``), body: a safetensors file of
  Hugging Face-named tensors in the engine's dtype, at most ``bucket_bytes``; then
  ``POST /finish_update`` ``{"update_id", "buckets"}`` resets the prefix cache and sets the hash.
- ``POST /reset_prefix_cache`` -> ``{"status": "ok"}``.

The server listens on 127.0.0.1 unless told otherwise; with a shared token (environment variable
``PASODOBLE_ENGINE_TOKEN``, name configurable) every POST needs ``Authorization: Bearer <token>``, and
it refuses a non-loopback address without one. Request bodies are capped (``--max-body-mb`` for weight
buckets, ``--max-json-mb`` for the rest).

**TRL server** (``vllm.mode=trl_server``): the engines are vLLM's own OpenAI server as TRL starts it
(``trl vllm-serve``, i.e. ``VLLM_SERVER_DEV_MODE=1 vllm serve ... --weight-transfer-config
'{"backend": "nccl"}'``), driven by TRL's ``VLLMClient``: weights travel GPU to GPU over NCCL
(``update_named_params``), generation requests go to ``/v1/completions`` (one per prompt, concurrently,
each with its own seed; vLLM's async engine batches them). Needs ``trl`` and ``vllm`` on the trainer.

Sampling: prompts go in as token ids, ``completion_ids`` are the engine's output ids (the stop token
that ended a completion is kept). Stop ids: the EOS ids and the chat template's end-of-turn id
(``base.stop_token_ids``). Each prompt gets its own seed (``SamplingParams.seed`` and its index, or
``SamplingParams.seeds``), so repeated prompts give different samples. ``logprobs`` come from the
engine's ``logprobs_mode`` (``processed_logprobs``: after temperature, which the learner computes).
"""

from __future__ import annotations

import argparse
import atexit
import gc
import hashlib
import hmac
import ipaddress
import json
import os
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

import numpy as np
import torch

from pasodoble import distributed as dist
from pasodoble.config import Config, VLLMConfig
from pasodoble.errors import UserError
from pasodoble.rollout.base import Completion, SamplingParams, stop_token_ids
from pasodoble.weights import full_state_items, is_sharded

Request = dict[str, Any]  # {"prompt_token_ids": [...], "sampling": {...}}
Output = dict[str, Any]  # {"token_ids": [...], "finish_reason": str, "logprobs": [...] | None}

TOKEN_ENV = "PASODOBLE_ENGINE_TOKEN"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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


# --------------------------------------------------------------------------------------------------
# In-process engine


class LocalEngine:
    """A ``vllm.LLM`` in this process (colocated mode, and the engine behind the server)."""

    def __init__(
        self,
        model_dir: str,
        *,
        dtype: str,
        gpu_memory_utilization: float,
        max_model_len: int,
        enable_sleep_mode: bool,
        enforce_eager: bool = False,
        logprobs_mode: str = "processed_logprobs",
        tensor_parallel_size: int = 1,
        seed: int = 0,
        external_launcher: bool = False,
        load_format: str = "auto",
    ) -> None:
        try:
            import vllm
        except ImportError as exc:
            raise UserError(
                "rollout.backend=vllm needs the vllm package: install the vllm extra "
                "(pip install 'pasodoble[vllm]') on a CUDA machine, or use rollout.backend=hf "
                f"({type(exc).__name__}: {exc})"
            ) from None
        # In-process engine core, so the model object is reachable for load_weights.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
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
            "logprobs_mode": logprobs_mode,
            "load_format": load_format,
        }
        if external_launcher:  # one engine per torchrun process (colocated); vLLM reuses the torch env
            kwargs["distributed_executor_backend"] = "external_launcher"
        self.llm = vllm.LLM(**kwargs)

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
            [_output_record(c, bool(r["sampling"]["logprobs"])) for c in res.outputs]
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
        model = self._model()
        if model is not None:
            for name, tensor in weights:  # one tensor at a time: no second full copy of the model
                model.load_weights(weights=[(name, tensor)])
            return
        # Engine workers in other processes (tensor parallelism): send the tensors by RPC.
        batch = [(n, t.detach().cpu()) for n, t in weights]
        self.llm.collective_rpc(_worker_load_weights, args=(batch,))

    def reset_prefix_cache(self) -> None:
        self.llm.reset_prefix_cache()

    def sleep(self, level: int = 2) -> None:
        self.llm.sleep(level=level)

    def wake_up(self, tags: list[str] | None = None) -> None:
        self.llm.wake_up(tags=tags)


def _worker_load_weights(worker, weights: list[tuple[str, torch.Tensor]]) -> None:
    """Runs inside each vLLM worker (``collective_rpc``): load HF-named tensors; TP sharding is vLLM's."""
    device = next(worker.model_runner.model.parameters()).device
    worker.model_runner.model.load_weights(weights=[(n, t.to(device)) for n, t in weights])


def _output_record(c, with_logprobs: bool) -> Output:
    """A vLLM ``CompletionOutput`` as a plain record (what the server sends and the backend reads)."""
    ids = list(c.token_ids)
    logprobs = None
    if with_logprobs and c.logprobs is not None:
        logprobs = []
        for tok, entry in zip(ids, c.logprobs, strict=False):  # one dict {token_id: Logprob} per token
            lp = entry[tok]
            logprobs.append(float(getattr(lp, "logprob", lp)))
    return {"token_ids": ids, "finish_reason": str(c.finish_reason), "logprobs": logprobs}


class ColocatedEngine:
    """One engine of this process serving both roles: it holds one role's weights at a time.

    ``run(role, model, stale, requests)`` makes the engine hold ``role``'s current weights (loading them
    from ``model`` when it holds another role's, none, or ``stale`` ones), generates, and with
    ``sleep_between_steps`` puts it to sleep at level 2. Every process runs the same sequence of calls, so
    the loads (collectives under FSDP2) line up; ``requests`` may be empty. Returns the outputs and the
    seconds spent loading weights.
    """

    def __init__(self, engine: Engine, *, sleep_between_steps: bool, dtype: torch.dtype | None) -> None:
        self.engine = engine
        self.sleep_between_steps = sleep_between_steps
        self.dtype = dtype
        self.holds: str | None = None  # the role whose current weights the engine holds
        self.weights_awake = self.kv_awake = True
        self.loads = 0
        if sleep_between_steps:  # nothing useful is loaded yet: give the memory to the learners
            self.sleep()

    def sleep(self) -> None:
        self.engine.sleep(level=2)
        self.weights_awake = self.kv_awake = False
        self.holds = None  # level 2 discards the weights

    def load(self, role: str, model: torch.nn.Module, *, local_only: bool = False) -> float:
        """Load ``role``'s weights from ``model`` (see the class docstring); seconds spent."""
        started = time.perf_counter()
        if local_only and is_sharded(model):
            raise RuntimeError(
                f"the colocated vLLM engine must load the {role}'s FSDP2-sharded weights, a collective, but "
                "this generation runs on one process only; run it on every process"
            )
        if not self.weights_awake:
            free_device_cache()
            self.engine.wake_up(tags=["weights"])
            self.weights_awake = True
        self.engine.load_weights(full_state_items(model, dtype=self.dtype, skip_tied=True))
        self.engine.reset_prefix_cache()
        self.holds = role
        self.loads += 1
        return time.perf_counter() - started

    def run(
        self,
        role: str,
        model: torch.nn.Module,
        stale: bool,
        requests: list[Request],
        *,
        local_only: bool = False,
    ) -> tuple[list[list[Output]], float]:
        seconds = 0.0
        if self.holds != role or stale:
            seconds = self.load(role, model, local_only=local_only)
        if not self.kv_awake:
            free_device_cache()
            self.engine.wake_up(tags=["kv_cache"])
            self.kv_awake = True
        outputs = self.engine.generate(requests) if requests else []
        if self.sleep_between_steps:
            self.sleep()
        return outputs, seconds


# The colocated engine of this process (built by the first colocated backend, shared by the second).
_COLOCATED: dict[str, ColocatedEngine] = {}


def _colocated_engine(model: torch.nn.Module, tokenizer, config: Config | None) -> ColocatedEngine:
    if "engine" in _COLOCATED:
        return _COLOCATED["engine"]
    v = config.vllm if config is not None else VLLMConfig()
    dtype = config.model.dtype if config is not None else "bfloat16"
    # The engine starts from the architecture's config with dummy weights: the role's weights are loaded
    # before its first generation, so no weights are written to or read from disk.
    tmp = tempfile.mkdtemp(prefix="pasodoble-vllm-config-")
    atexit.register(shutil.rmtree, tmp, True)
    model.config.save_pretrained(tmp)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    engine = LocalEngine(
        tmp,
        dtype=dtype,
        gpu_memory_utilization=v.gpu_memory_utilization,
        max_model_len=_max_model_len(config),
        enable_sleep_mode=v.sleep_between_steps,
        enforce_eager=v.enforce_eager,
        logprobs_mode=v.logprobs_mode,
        seed=config.run.seed if config is not None else 0,
        external_launcher=dist.world_size() > 1,
        load_format="dummy",
    )
    _COLOCATED["engine"] = ColocatedEngine(
        engine, sleep_between_steps=v.sleep_between_steps, dtype=_DTYPES.get(dtype)
    )
    return _COLOCATED["engine"]


def _max_model_len(config: Config | None) -> int:
    if config is None:
        return 8192
    if config.vllm.max_model_len is not None:
        return config.vllm.max_model_len
    r = config.rollout
    longest = max(
        rc.max_new_tokens if rc.max_new_tokens is not None else r.max_new_tokens
        for rc in (config.proposer, config.solver)
    )
    return r.max_prompt_tokens + longest


# --------------------------------------------------------------------------------------------------
# HTTP client of our engine server


def engine_token(env_name: str = TOKEN_ENV) -> str | None:
    """The shared engine token from the environment variable ``env_name`` (None when unset or empty)."""
    value = os.environ.get(env_name, "").strip()
    return value or None


class RemoteEngine:
    """Client of one engine server (``serve`` below). Every call has a timeout and raises on failure."""

    def __init__(
        self,
        base_url: str,
        *,
        request_timeout_s: float = 1800.0,
        weight_sync_timeout_s: float = 600.0,
        connect_timeout_s: float = 300.0,
        bucket_bytes: int = 256 * 1024**2,
        token: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.request_timeout_s = request_timeout_s
        self.weight_sync_timeout_s = weight_sync_timeout_s
        self.bucket_bytes = bucket_bytes
        self.token = token
        self.pushed_hash: str | None = None
        self.wait_healthy(connect_timeout_s)

    def _call(
        self,
        method: str,
        route: str,
        body: bytes | None,
        content_type: str,
        timeout: float,
        headers: dict[str, str] | None = None,
    ) -> dict:
        url = f"{self.base_url}{route}"
        all_headers = {"Content-Type": content_type, **(headers or {})}
        if self.token:
            all_headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(url, data=body, method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:500].decode(errors="replace")
            raise RuntimeError(f"vLLM engine {url} answered HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            raise RuntimeError(f"vLLM engine {url} failed after at most {timeout:.0f} s: {exc}") from None

    def health(self, timeout: float = 10.0) -> dict:
        return self._call("GET", "/health", None, "application/json", timeout=timeout)

    def wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                self.health(timeout=min(10.0, timeout_s))
                return
            except RuntimeError as exc:
                last = exc
                time.sleep(min(2.0, max(0.05, deadline - time.monotonic())))
        raise UserError(
            f"the vLLM engine at {self.base_url} did not answer /health within {timeout_s:.0f} s ({last}); "
            "start it with `python -m pasodoble.rollout.vllm serve` or fix vllm.*_url"
        )

    def generate(self, requests: list[Request]) -> list[list[Output]]:
        body = json.dumps({"requests": requests}).encode()
        out = self._call("POST", "/generate", body, "application/json", self.request_timeout_s)
        outputs = out.get("outputs")
        if not isinstance(outputs, list) or len(outputs) != len(requests):
            raise RuntimeError(f"vLLM engine {self.base_url}/generate returned a malformed answer")
        return outputs

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Push every tensor in buckets, finish the update (the server resets its prefix cache), then
        check that the hash the server reports on /health is the hash of what was sent."""
        from safetensors.torch import save

        deadline = time.monotonic() + self.weight_sync_timeout_s
        update_id = uuid.uuid4().hex
        hasher = hashlib.sha256()
        buckets = 0
        with ThreadPoolExecutor(max_workers=1) as pool:  # hash while the bytes travel
            for bucket in _buckets(weights, self.bucket_bytes):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RuntimeError(
                        f"pushing weights to {self.base_url} exceeded vllm.weight_sync_timeout_s="
                        f"{self.weight_sync_timeout_s:.0f} s"
                    )
                payload = save(_host_tensors(bucket))
                hashing = pool.submit(hasher.update, payload)
                headers = {"X-Update-Id": update_id, "X-Bucket": str(buckets)}
                self._call("POST", "/update_weights", payload, "application/octet-stream", remaining, headers)
                hashing.result()
                buckets += 1
        body = json.dumps({"update_id": update_id, "buckets": buckets}).encode()
        remaining = max(1.0, deadline - time.monotonic())
        self._call("POST", "/finish_update", body, "application/json", remaining)
        self.pushed_hash = hasher.hexdigest()
        reported = self.health().get("weights_hash")
        if reported != self.pushed_hash:
            raise RuntimeError(
                f"the vLLM engine at {self.base_url} reports weights hash {str(reported)[:16]} after the push, "
                f"but the pushed weights hash to {self.pushed_hash[:16]}: it is not serving the trained policy "
                "(was it restarted, or is another trainer pushing to it?)"
            )

    def reset_prefix_cache(self) -> None:
        self._call("POST", "/reset_prefix_cache", b"{}", "application/json", self.request_timeout_s)

    def sleep(self, level: int = 2) -> None:  # a server engine owns its GPUs: nothing to release
        pass

    def wake_up(self, tags: list[str] | None = None) -> None:
        pass


def _host_tensors(bucket: list[tuple[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The bucket's tensors on the CPU, contiguous, none sharing memory (safetensors refuses aliases)."""
    out, seen = {}, set()
    for name, t in bucket:
        host = t.detach().contiguous().cpu()
        key = (host.untyped_storage().data_ptr(), host.storage_offset())
        if key in seen and host.numel():
            host = host.clone()
        seen.add(key)
        out[name] = host
    return out


def _buckets(weights: Iterable[tuple[str, torch.Tensor]], max_bytes: int) -> Iterator[list]:
    bucket: list[tuple[str, torch.Tensor]] = []
    size = 0
    for name, t in weights:
        nbytes = t.numel() * t.element_size()
        if bucket and size + nbytes > max_bytes:
            yield bucket
            bucket, size = [], 0
        bucket.append((name, t))
        size += nbytes
    if bucket:
        yield bucket


# --------------------------------------------------------------------------------------------------
# TRL's client of vLLM's own server


class TRLEngine:
    """vLLM's OpenAI server (started by ``trl vllm-serve``) through TRL's ``VLLMClient``.

    Weights go over NCCL (``init_communicator`` once, then ``update_named_params`` per push), one
    ``/v1/completions`` request per prompt runs concurrently with its own seed. ``client`` replaces
    the ``VLLMClient`` (tests).
    """

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout_s: float = 300.0,
        group_port: int = 51216,
        max_concurrent: int = 64,
        client=None,
    ) -> None:
        self.base_url = base_url
        if client is None:
            try:
                from trl.generation.vllm_client import VLLMClient
            except ImportError as exc:
                raise UserError(
                    f"vllm.mode=trl_server needs trl and vllm on the trainer (pip install trl 'pasodoble[vllm]'): {exc}"
                ) from None
            try:
                client = VLLMClient(
                    base_url=base_url, group_port=group_port, connection_timeout=connect_timeout_s
                )
            except ImportError as exc:
                raise UserError(f"vllm.mode=trl_server: {exc}") from None
        self.client = client
        self.max_concurrent = max_concurrent
        self._communicator = False

    def generate(self, requests: list[Request]) -> list[list[Output]]:
        def one(r: Request) -> list[Output]:
            s = r["sampling"]
            out = self.client.generate(
                prompts=[list(r["prompt_token_ids"])],
                n=s["n"],
                temperature=s["temperature"],
                top_p=s["top_p"],
                top_k=s["top_k"],
                max_tokens=s["max_tokens"],
                logprobs=0 if s["logprobs"] else None,
                generation_kwargs={"seed": s["seed"], "stop_token_ids": list(s["stop_token_ids"])},
            )
            lps, lp_ids = out.get("logprobs"), out.get("logprob_token_ids")
            group = []
            for j, ids in enumerate(out["completion_ids"]):
                ids = [int(t) for t in ids]
                stopped = bool(ids) and ids[-1] in s["stop_token_ids"]
                sampled = None
                if s["logprobs"] and lps:  # per token: the entry of the sampled id (others are top-k)
                    sampled = [float(v[k.index(t)]) for t, v, k in zip(ids, lps[j], lp_ids[j], strict=True)]
                group.append(
                    {"token_ids": ids, "finish_reason": "stop" if stopped else "length", "logprobs": sampled}
                )
            return group

        if not requests:
            return []
        with ThreadPoolExecutor(max_workers=min(self.max_concurrent, len(requests))) as pool:
            return list(pool.map(one, requests))

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]], metadata=None) -> None:
        if not self._communicator:
            device = torch.cuda.current_device() if torch.cuda.is_available() else "cpu"
            self.client.init_communicator(device=device)
            self._communicator = True
        self.client.update_named_params(metadata, iter(weights))

    def reset_prefix_cache(self) -> None:
        self.client.reset_prefix_cache()

    def sleep(self, level: int = 2) -> None:
        pass

    def wake_up(self, tags: list[str] | None = None) -> None:
        pass


def _weight_metadata(model: torch.nn.Module, dtype: torch.dtype | None) -> list[tuple[str, str, list[int]]]:
    """``(name, dtype, shape)`` of every tensor ``full_state_items(skip_tied=True)`` yields (global
    shapes, no gather)."""
    unique = {n for n, _ in model.named_parameters()}
    tied = {n for n, _ in model.named_parameters(remove_duplicate=False)} - unique
    out = []
    for name, t in model.state_dict().items():
        if name in tied:
            continue
        d = dtype if (dtype is not None and t.is_floating_point()) else t.dtype
        out.append((name, str(d).removeprefix("torch."), list(t.shape)))
    return out


# --------------------------------------------------------------------------------------------------
# The backend


def _derive_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([abs(int(seed)), index]).generate_state(1, np.uint32)[0])


class VLLMBackend:
    """``RolloutBackend`` on vLLM; see the module docstring for the three modes.

    Args:
        model: the role's (unwrapped) training model: its weights are loaded into the colocated engine
            before the role generates, or pushed to the role's server now and after every update.
        tokenizer: decodes completions (the same tokenizer as the learner's).
        role: 'proposer' or 'solver' (picks ``vllm.<role>_url`` in the server modes).
        config: the run's configuration (``vllm.*``, ``rollout.*``, ``model.dtype``); default values
            of ``VLLMConfig`` when None.
        engine: an engine to use instead of building one (tests, custom deployments); in colocated mode
            pass the same ``ColocatedEngine`` to both roles.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        *,
        generation_batch_size: int = 64,
        role: str | None = None,
        config: Config | None = None,
        engine: Engine | ColocatedEngine | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.role = role or "policy"
        self.vcfg = config.vllm if config is not None else VLLMConfig()
        self.mode = self.vcfg.mode
        self.generation_batch_size = generation_batch_size  # the engine schedules its own batches
        self.eos_token_ids = stop_token_ids(model, tokenizer)
        self.dtype = _DTYPES.get(config.model.dtype) if config is not None else torch.bfloat16
        self.model = model
        self._stale = True  # the engine has never held this role's weights
        self._sync_seconds = 0.0
        self.shared: ColocatedEngine | None = None
        self.engine: Engine | None = None
        if self.mode == "colocated":
            if isinstance(engine, ColocatedEngine):
                self.shared = engine
            elif engine is not None:
                self.shared = ColocatedEngine(
                    engine, sleep_between_steps=self.vcfg.sleep_between_steps, dtype=self.dtype
                )
            else:
                self.shared = _colocated_engine(model, tokenizer, config)
            return
        if dist.is_main():  # only the main process talks to the server
            self.engine = engine if engine is not None else self._client()
        self.sync_weights(model)  # step 0: the engine serves this role's starting weights from now on

    def _client(self) -> Engine:
        v = self.vcfg
        url = getattr(v, f"{self.role}_url", None)
        if not url:
            raise UserError(
                f"vllm.mode={self.mode} needs vllm.{self.role}_url (the {self.role} engine's base URL)"
            )
        if self.mode == "trl_server":
            port = v.nccl_group_port + (1 if self.role == "solver" else 0)
            return TRLEngine(url, connect_timeout_s=v.connect_timeout_s, group_port=port)
        return RemoteEngine(
            url,
            request_timeout_s=v.request_timeout_s,
            weight_sync_timeout_s=v.weight_sync_timeout_s,
            connect_timeout_s=v.connect_timeout_s,
            bucket_bytes=int(v.bucket_mb * 1024**2),
            token=engine_token(v.token_env),
        )

    # ------------------------------------------------------------------ the Protocol

    def _requests(self, prompts: list[list[int]], params: SamplingParams) -> list[Request]:
        if any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        if params.seeds is not None and len(params.seeds) != len(prompts):
            raise ValueError(f"params.seeds has {len(params.seeds)} seeds for {len(prompts)} prompts")
        return [
            {
                "prompt_token_ids": list(p),
                "sampling": {
                    "n": params.n,
                    "temperature": params.temperature,
                    "top_p": params.top_p,
                    "top_k": params.top_k,
                    "max_tokens": params.max_new_tokens,
                    "seed": _derive_seed(params.seed, i) if params.seeds is None else int(params.seeds[i]),
                    "logprobs": params.return_logprobs,
                    "stop_token_ids": self.eos_token_ids,
                },
            }
            for i, p in enumerate(prompts)
        ]

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        """Every process calls this in the same order (an empty list where it has no prompts): the
        colocated engine's weight loads and the server modes' gather are collectives."""
        return self._generate(prompts, params, local_only=False)

    def local(self) -> _LocalView:
        """A view whose ``generate`` involves this process only (evaluation on the main process): no
        gather; a colocated load of FSDP2-sharded weights then raises instead of hanging."""
        return _LocalView(self)

    def _generate(self, prompts, params, *, local_only: bool) -> list[list[Completion]]:
        requests = self._requests(prompts, params)
        if self.mode == "colocated":
            outputs, seconds = self.shared.run(
                self.role, self.model, self._stale, requests, local_only=local_only
            )
            self._stale = False
            self._sync_seconds += seconds
        elif local_only or dist.world_size() == 1:
            outputs = self.engine.generate(requests) if requests else []
        else:  # one request per role per step: gather every process's prompts, scatter the results
            counts = dist.gather_list([len(requests)])
            everything = dist.gather_list(requests)
            every_output = dist.main_then_broadcast(
                lambda: self.engine.generate(everything) if everything else []
            )
            start = sum(counts[: dist.rank()])
            outputs = every_output[start : start + len(requests)]
        result: list[list[Completion]] = []
        for prompt, group in zip(prompts, outputs, strict=True):
            if len(group) != params.n:
                raise RuntimeError(f"the vLLM engine returned {len(group)} completions, expected {params.n}")
            result.append([self._completion(prompt, o, params) for o in group])
        return result

    def _completion(self, prompt: list[int], o: Output, params: SamplingParams) -> Completion:
        ids = [int(t) for t in o["token_ids"]]
        ended = bool(ids) and ids[-1] in self.eos_token_ids
        finish = "length" if o["finish_reason"] == "length" and not ended else "eos"
        logprobs = o.get("logprobs") if params.return_logprobs else None
        if params.return_logprobs and (logprobs is None or len(logprobs) != len(ids)):
            raise RuntimeError("the vLLM engine returned no per-token logprobs for every sampled token")
        return Completion(
            prompt_ids=list(prompt),
            completion_ids=ids,
            text=self.tokenizer.decode(ids, skip_special_tokens=True),
            finish_reason=finish,
            logprobs=[float(x) for x in logprobs] if logprobs is not None else None,
        )

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Give the engine ``model``'s weights (every process calls this after each update).

        Colocated: marks the role's weights stale; they load before its next generation. Server modes:
        pushes them now from the main process (the others take part in the FSDP2 gathers) and resets the
        prefix cache; the HTTP server's weight hash is checked.
        """
        self.model = model
        self._stale = True
        if self.mode == "colocated":
            return
        items = full_state_items(model, dtype=self.dtype, keep=dist.is_main(), skip_tied=True)
        if not dist.is_main():
            for _ in items:  # take part in the FSDP gathers
                pass
            dist.main_then_broadcast(lambda: None)
            self._stale = False
            return
        metadata = _weight_metadata(model, self.dtype) if self.mode == "trl_server" else None

        def push() -> None:
            try:
                if metadata is not None:
                    self.engine.load_weights(items, metadata=metadata)
                else:
                    self.engine.load_weights(items)
            except BaseException:
                for _ in items:  # finish the gathers the other processes are waiting in
                    pass
                raise
            if self.mode == "trl_server":
                self.engine.reset_prefix_cache()  # our server resets it when the update finishes

        dist.main_then_broadcast(push)
        self._stale = False

    def pop_sync_seconds(self) -> float:
        """Seconds spent loading weights lazily (colocated, before a generation) since the last call; the
        server modes push inside ``sync_weights``, which the caller times itself (``time/weight_sync``)."""
        seconds, self._sync_seconds = self._sync_seconds, 0.0
        return seconds

    def close(self) -> None:
        pass


class _LocalView:
    """``VLLMBackend.local()``: generate on this process alone."""

    def __init__(self, backend: VLLMBackend) -> None:
        self.backend = backend

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        return self.backend._generate(prompts, params, local_only=True)

    def sync_weights(self, model: torch.nn.Module) -> None:
        self.backend.sync_weights(model)


# --------------------------------------------------------------------------------------------------
# The engine server


class _BadRequest(ValueError):
    """A malformed request: answered with HTTP 400 and this message."""


def _check_requests(payload: Any) -> list[Request]:
    """The ``requests`` of a /generate body, with every field's type checked (a one-line 400 otherwise)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("requests"), list):
        raise _BadRequest('body must be {"requests": [...]}')
    fields = {
        "n": int,
        "temperature": (int, float),
        "top_p": (int, float),
        "top_k": int,
        "max_tokens": int,
        "seed": int,
        "logprobs": bool,
        "stop_token_ids": list,
    }
    for i, r in enumerate(payload["requests"]):
        if not isinstance(r, dict):
            raise _BadRequest(f"requests[{i}] must be an object")
        ids = r.get("prompt_token_ids")
        if not isinstance(ids, list) or not ids or not all(type(t) is int and t >= 0 for t in ids):
            raise _BadRequest(f"requests[{i}].prompt_token_ids must be a non-empty list of token ids")
        s = r.get("sampling")
        if not isinstance(s, dict):
            raise _BadRequest(f"requests[{i}].sampling must be an object")
        for key, kind in fields.items():
            if not isinstance(s.get(key), kind) or (kind is int and isinstance(s.get(key), bool)):
                raise _BadRequest(f"requests[{i}].sampling.{key} is missing or has the wrong type")
        if s["n"] < 1 or s["max_tokens"] < 1 or not s["temperature"] > 0:
            raise _BadRequest(f"requests[{i}].sampling needs n >= 1, max_tokens >= 1 and temperature > 0")
    return payload["requests"]


def make_server(
    engine: Engine,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    model_name: str = "",
    token: str | None = None,
    max_body_bytes: int = 512 * 1024**2,
    max_json_bytes: int = 64 * 1024**2,
) -> ThreadingHTTPServer:
    """An HTTP server speaking the protocol of the module docstring around ``engine`` (not started).

    ``token``: when set, every POST must carry ``Authorization: Bearer <token>`` (401 otherwise).
    ``max_body_bytes`` caps a weight bucket, ``max_json_bytes`` any other body (413 beyond, unread).
    """
    lock = threading.Lock()  # generation and weight updates never overlap
    state: dict[str, Any] = {
        "update_id": None,
        "hasher": None,
        "buckets": 0,
        "weights_hash": "initial",  # what the engine loaded at start-up, not pushed by a trainer
        "weights_version": 0,
    }

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):  # quiet: one line per request is too much at RL rates
            pass

        def _reply(self, code: int, payload: dict) -> None:
            body = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _body(self, limit: int) -> bytes:
            raw = self.headers.get("Content-Length")
            try:
                n = int(raw) if raw is not None else -1
            except ValueError:
                n = -1
            if n < 0:
                self.close_connection = True
                raise _HTTPError(411, "a Content-Length header is required")
            if n > limit:
                self.close_connection = True  # the body is not read
                raise _HTTPError(413, f"body of {n} bytes exceeds the server's cap of {limit} bytes")
            return self.rfile.read(n)

        def _authorized(self) -> bool:
            if not token:
                return True
            given = self.headers.get("Authorization", "")
            return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

        def do_GET(self):
            if self.path.rstrip("/") == "/health":
                self._reply(
                    200,
                    {
                        "status": "ok",
                        "model": model_name,
                        "weights_hash": state["weights_hash"],
                        "weights_version": state["weights_version"],
                    },
                )
            else:
                self._reply(404, {"error": f"no route {self.path}"})

        def do_POST(self):
            route = self.path.rstrip("/")
            try:
                if not self._authorized():
                    self.close_connection = True
                    raise _HTTPError(401, "missing or wrong engine token (Authorization: Bearer ...)")
                if route == "/generate":
                    try:
                        requests = _check_requests(json.loads(self._body(max_json_bytes)))
                    except json.JSONDecodeError as exc:
                        raise _HTTPError(400, f"body is not JSON: {exc}") from None
                    except _BadRequest as exc:
                        raise _HTTPError(400, str(exc)) from None
                    with lock:
                        outputs = engine.generate(requests)
                    self._reply(200, {"outputs": outputs})
                elif route == "/update_weights":
                    self._update(self._body(max_body_bytes))
                elif route == "/finish_update":
                    self._finish(self._body(max_json_bytes))
                elif route == "/reset_prefix_cache":
                    self._body(max_json_bytes)
                    with lock:
                        engine.reset_prefix_cache()
                    self._reply(200, {"status": "ok"})
                else:
                    self._reply(404, {"error": f"no route {self.path}"})
            except _HTTPError as exc:
                self._reply(exc.code, {"error": str(exc)})
            except Exception as exc:  # noqa: BLE001 - the client sees the message with the status
                self._reply(500, {"error": f"{type(exc).__name__}: {exc}"})

        def _update(self, body: bytes) -> None:
            from safetensors.torch import load

            update_id = self.headers.get("X-Update-Id", "")
            try:
                bucket = int(self.headers.get("X-Bucket", ""))
            except ValueError:
                raise _HTTPError(400, "X-Bucket must be the bucket's index (0, 1, ...)") from None
            try:
                tensors = load(body)
            except Exception as exc:  # noqa: BLE001 - malformed upload
                raise _HTTPError(400, f"body is not a safetensors file: {exc}") from None
            with lock:
                if bucket == 0:
                    state.update(update_id=update_id, hasher=hashlib.sha256(), buckets=0)
                elif update_id != state["update_id"] or bucket != state["buckets"]:
                    raise _HTTPError(409, f"bucket {bucket} of update {update_id[:8]} arrived out of order")
                with ThreadPoolExecutor(max_workers=1) as pool:  # hash while the engine loads
                    hashing = pool.submit(state["hasher"].update, body)
                    engine.load_weights(list(tensors.items()))
                    hashing.result()
                state["buckets"] += 1
            self._reply(200, {"status": "ok", "tensors": len(tensors)})

        def _finish(self, body: bytes) -> None:
            try:
                req = json.loads(body)
                update_id, buckets = str(req["update_id"]), int(req["buckets"])
            except (ValueError, KeyError, TypeError):
                raise _HTTPError(400, 'body must be {"update_id": ..., "buckets": N}') from None
            with lock:
                if update_id != state["update_id"] or buckets != state["buckets"]:
                    raise _HTTPError(
                        409,
                        f"update {update_id[:8]}: {state['buckets']} bucket(s) arrived, {buckets} announced",
                    )
                engine.reset_prefix_cache()
                state["weights_hash"] = state["hasher"].hexdigest()
                state["weights_version"] += 1
                state["update_id"] = None
            self._reply(200, {"status": "ok", "weights_hash": state["weights_hash"]})

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


class _HTTPError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(argv: list[str] | None = None) -> int:
    """``python -m pasodoble.rollout.vllm serve --model DIR [--port 8100] ...``: one role's engine."""
    ap = argparse.ArgumentParser(prog="python -m pasodoble.rollout.vllm serve")
    ap.add_argument("--model", required=True, help="model directory or hub name the engine starts from")
    ap.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default loopback only; another address needs a token, see --token-env)",
    )
    ap.add_argument("--port", type=int, default=8100)
    ap.add_argument(
        "--token-env",
        default=TOKEN_ENV,
        help="environment variable holding the shared token every POST must carry (vllm.token_env)",
    )
    ap.add_argument(
        "--no-auth",
        action="store_true",
        help="allow a non-loopback --host without a token (anyone who reaches it can replace the weights)",
    )
    ap.add_argument("--max-body-mb", type=float, default=512.0, help="cap of one weight bucket upload")
    ap.add_argument("--max-json-mb", type=float, default=64.0, help="cap of any other request body")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    ap.add_argument("--max-model-len", type=int, default=8192)
    ap.add_argument("--tensor-parallel-size", type=int, default=1)
    ap.add_argument("--enforce-eager", action="store_true")
    ap.add_argument("--logprobs-mode", default="processed_logprobs")
    ap.add_argument(
        "--load-format",
        default="auto",
        help="'dummy' skips reading the weights (the trainer pushes its own before the first step)",
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    token = engine_token(args.token_env)
    if not _is_loopback(args.host) and token is None and not args.no_auth:
        ap.error(
            f"--host {args.host} exposes /update_weights beyond this machine: set {args.token_env} to a shared "
            "secret (and the same variable for the trainer), or pass --no-auth"
        )
    for key in ("max_body_mb", "max_json_mb"):
        if getattr(args, key) <= 0:
            ap.error(f"--{key.replace('_', '-')} must be > 0")
    engine = LocalEngine(
        args.model,
        dtype=args.dtype,
        gpu_memory_utilization=args.gpu_memory_utilization,
        max_model_len=args.max_model_len,
        enable_sleep_mode=False,
        enforce_eager=args.enforce_eager,
        logprobs_mode=args.logprobs_mode,
        tensor_parallel_size=args.tensor_parallel_size,
        seed=args.seed,
        load_format=args.load_format,
    )
    server = make_server(
        engine,
        args.host,
        args.port,
        model_name=args.model,
        token=token,
        max_body_bytes=int(args.max_body_mb * 1024**2),
        max_json_bytes=int(args.max_json_mb * 1024**2),
    )
    auth = "token required" if token else "no token"
    print(
        f"pasodoble vLLM engine for {args.model} on http://{args.host}:{server.server_address[1]} ({auth})",
        flush=True,
    )
    server.serve_forever()
    return 0


if __name__ == "__main__":
    import sys

    if len(sys.argv) < 2 or sys.argv[1] != "serve":
        print("usage: python -m pasodoble.rollout.vllm serve --model DIR [options]", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(serve(sys.argv[2:]))
