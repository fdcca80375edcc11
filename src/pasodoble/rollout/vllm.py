"""vLLM rollout backend (GPU): colocated in-process engines or one HTTP engine server per role.

The only module that imports ``vllm`` (inside ``LocalEngine``; the HTTP client and the server's
protocol do not need it, so they are testable without a GPU).

**Colocated** (``vllm.mode=colocated``): every training process holds a ``vllm.LLM`` per role on its
own GPU, taking ``vllm.gpu_memory_utilization`` of it. After generating, the engine goes to sleep
(``LLM.sleep(level=1)``: KV cache freed, weights offloaded to CPU) so the learners can train; it wakes
before the next weight load or generation. ``sync_weights`` streams the learner's full tensors
(FSDP2 ``DTensor`` shards are gathered, a collective every rank takes part in) into the engine's
``model.load_weights`` and resets the prefix cache.

**Server** (``vllm.mode=server``): one engine per role runs ``python -m pasodoble.rollout.vllm serve``
on its own GPUs; every training process sends its share of the prompts to it over HTTP, and the
server batches requests that arrive together into one ``LLM.generate`` call. The protocol
(JSON unless stated; every client call has a timeout and raises on any failure):

- ``GET /health`` -> ``{"status": "ok", "model": ...}``
- ``POST /generate`` ``{"requests": [{"prompt_token_ids": [...], "sampling": {...}}]}`` ->
  ``{"outputs": [[{"token_ids": [...], "finish_reason": "stop"|"length", "logprobs": [...]|null}]]}``;
  ``sampling`` has ``n, temperature, top_p, top_k, max_tokens, seed, logprobs (bool), stop_token_ids``.
- ``POST /update_weights`` body: a safetensors file (``application/octet-stream``) holding a bucket of
  named tensors (Hugging Face names); sent in buckets of at most ``bucket_bytes``.
- ``POST /reset_prefix_cache`` -> ``{"status": "ok"}`` (after the last bucket of an update).

Only the main training process pushes weights (after every process has gathered its FSDP shards);
the others wait for its result, so no process generates from stale weights.

Sampling: prompts go in as token ids (``prompt_token_ids``), ``completion_ids`` are the engine's
output ids (the EOS that ended a completion is kept). Each prompt gets its own seed derived from
``SamplingParams.seed`` and its index, so repeated prompts give different samples and a run is
reproducible for a given engine build. ``logprobs`` come from the engine's ``logprobs_mode``
(``processed_logprobs``: after temperature, which is what the learner computes).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

import numpy as np
import torch

from pasodoble import distributed as dist
from pasodoble.config import Config, VLLMConfig
from pasodoble.errors import UserError
from pasodoble.rollout.base import Completion, SamplingParams

Request = dict[str, Any]  # {"prompt_token_ids": [...], "sampling": {...}}
Output = dict[str, Any]  # {"token_ids": [...], "finish_reason": str, "logprobs": [...] | None}


class Engine(Protocol):
    """What ``VLLMBackend`` needs from an engine, local or remote."""

    def generate(self, requests: list[Request]) -> list[list[Output]]: ...

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None: ...

    def reset_prefix_cache(self) -> None: ...

    def sleep(self) -> None: ...

    def wake_up(self) -> None: ...


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
    ) -> None:
        try:
            import vllm
        except ImportError as exc:
            raise UserError(
                "rollout.backend=vllm needs the vllm package: install the vllm extra "
                "(pip install 'pasodoble[vllm]') on a CUDA machine, or use rollout.backend=hf "
                f"({type(exc).__name__}: {exc})"
            ) from None
        self._vllm = vllm
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
        }
        if external_launcher:  # one engine per torchrun process (colocated); vLLM reuses the torch env
            kwargs["distributed_executor_backend"] = "external_launcher"
        self.llm = vllm.LLM(**kwargs)
        self.sleeping = False

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
        """The engine's torch model when it lives in this process (V1 in-process, then V0 layout)."""
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
            model.load_weights(weights=weights)
            return
        # Engine workers in other processes (tensor parallelism): send the tensors by RPC.
        batch = [(n, t.detach().cpu()) for n, t in weights]
        self.llm.collective_rpc(_worker_load_weights, args=(batch,))

    def reset_prefix_cache(self) -> None:
        self.llm.reset_prefix_cache()

    def sleep(self) -> None:
        if not self.sleeping:
            self.llm.sleep(level=1)
            self.sleeping = True

    def wake_up(self) -> None:
        if self.sleeping:
            self.llm.wake_up()
            self.sleeping = False


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


# --------------------------------------------------------------------------------------------------
# HTTP client


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
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.request_timeout_s = request_timeout_s
        self.weight_sync_timeout_s = weight_sync_timeout_s
        self.bucket_bytes = bucket_bytes
        self.wait_healthy(connect_timeout_s)

    def _call(self, method: str, route: str, body: bytes | None, content_type: str, timeout: float) -> dict:
        url = f"{self.base_url}{route}"
        req = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:500].decode(errors="replace")
            raise RuntimeError(f"vLLM engine {url} answered HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            raise RuntimeError(f"vLLM engine {url} failed after at most {timeout:.0f} s: {exc}") from None

    def wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                self._call("GET", "/health", None, "application/json", timeout=min(10.0, timeout_s))
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
        from safetensors.torch import save

        deadline = time.monotonic() + self.weight_sync_timeout_s
        for bucket in _buckets(weights, self.bucket_bytes):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(
                    f"pushing weights to {self.base_url} exceeded vllm.weight_sync_timeout_s="
                    f"{self.weight_sync_timeout_s:.0f} s"
                )
            payload = save({n: t.detach().contiguous().cpu() for n, t in bucket})
            self._call("POST", "/update_weights", payload, "application/octet-stream", remaining)

    def reset_prefix_cache(self) -> None:
        self._call("POST", "/reset_prefix_cache", b"{}", "application/json", self.request_timeout_s)

    def sleep(self) -> None:  # a server engine owns its GPUs: nothing to release
        pass

    def wake_up(self) -> None:
        pass


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
# The backend


def full_state_items(model: torch.nn.Module, *, keep: bool = True) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, full tensor)`` for every entry of ``model.state_dict()``, in order.

    FSDP2 ``DTensor`` shards are gathered with ``full_tensor()``, a collective: every process must
    iterate to the end, in the same order. With ``keep=False`` the tensors are gathered but not
    yielded (a process that only takes part in the collectives).
    """
    for name, t in model.state_dict().items():
        full = t.full_tensor() if hasattr(t, "full_tensor") else t
        if keep:
            yield name, full.detach()


def _derive_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([abs(int(seed)), index]).generate_state(1, np.uint32)[0])


class VLLMBackend:
    """``RolloutBackend`` on vLLM; see the module docstring for the two modes.

    Args:
        model: the role's (unwrapped) training model: its weights are saved for the engine's start
            when ``model_dir`` is not given, and pushed after every update.
        tokenizer: decodes completions (the same tokenizer as the learner's).
        role: 'proposer' or 'solver' (picks ``vllm.<role>_url`` in server mode).
        config: the run's configuration (``vllm.*``, ``rollout.*``, ``model.dtype``); default values
            of ``VLLMConfig`` when None.
        engine: an engine to use instead of building one (tests, custom deployments).
        model_dir: weights and tokenizer directory the colocated engine starts from.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        *,
        generation_batch_size: int = 64,
        role: str | None = None,
        config: Config | None = None,
        engine: Engine | None = None,
        model_dir: str | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.role = role or "policy"
        self.vcfg = config.vllm if config is not None else VLLMConfig()
        self.mode = self.vcfg.mode
        self.generation_batch_size = generation_batch_size  # the engine schedules its own batches
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos += [gen_eos] if isinstance(gen_eos, int) else list(gen_eos or [])
        self.eos_token_ids = sorted({int(e) for e in eos})
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.engine = engine if engine is not None else self._build_engine(model, config, model_dir)

    def _build_engine(self, model: torch.nn.Module, config: Config | None, model_dir: str | None) -> Engine:
        v = self.vcfg
        if self.mode == "server":
            url = getattr(v, f"{self.role}_url", None)
            if not url:
                raise UserError(
                    f"vllm.mode=server needs vllm.{self.role}_url (the {self.role} engine's base URL)"
                )
            return RemoteEngine(
                url,
                request_timeout_s=v.request_timeout_s,
                weight_sync_timeout_s=v.weight_sync_timeout_s,
                connect_timeout_s=v.connect_timeout_s,
            )
        if model_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix=f"pasodoble-vllm-{self.role}-")
            model_dir = self._tmp.name
            # Every process starts its own engine from its own copy (FSDP2 shards are gathered).
            model.save_pretrained(model_dir, state_dict=dict(full_state_items(model)))
            self.tokenizer.save_pretrained(model_dir)
        dtype = config.model.dtype if config is not None else "bfloat16"
        max_len = v.max_model_len
        if max_len is None:
            r = config.rollout if config is not None else None
            max_len = (r.max_prompt_tokens + r.max_new_tokens) if r is not None else 8192
            if config is not None:
                rc = getattr(config, self.role, None)
                if rc is not None and rc.max_new_tokens is not None:
                    max_len = r.max_prompt_tokens + max(rc.max_new_tokens, r.max_new_tokens)
        return LocalEngine(
            model_dir,
            dtype=dtype,
            gpu_memory_utilization=v.gpu_memory_utilization,
            max_model_len=max_len,
            enable_sleep_mode=v.sleep_between_steps,
            enforce_eager=v.enforce_eager,
            logprobs_mode=v.logprobs_mode,
            seed=config.run.seed if config is not None else 0,
            external_launcher=dist.world_size() > 1,
        )

    # ------------------------------------------------------------------ the Protocol

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        if any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        if params.seeds is not None and len(params.seeds) != len(prompts):
            raise ValueError(f"params.seeds has {len(params.seeds)} seeds for {len(prompts)} prompts")
        requests = [
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
        self.engine.wake_up()
        outputs = self.engine.generate(requests)
        if self.mode == "colocated" and self.vcfg.sleep_between_steps:
            self.engine.sleep()
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
        """Push ``model``'s weights into the engine and reset its prefix cache (all processes call this)."""
        if self.mode == "colocated":
            self.engine.wake_up()
            self.engine.load_weights(full_state_items(model))
            self.engine.reset_prefix_cache()
            return
        items = full_state_items(model, keep=dist.is_main())
        if not dist.is_main():
            for _ in items:  # take part in the FSDP gathers
                pass
            dist.main_then_broadcast(lambda: None)
            return

        def push() -> None:
            try:
                self.engine.load_weights(items)
            except BaseException:
                for _ in items:  # finish the gathers the other processes are waiting in
                    pass
                raise
            self.engine.reset_prefix_cache()

        dist.main_then_broadcast(push)

    def close(self) -> None:
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.cleanup()
            self._tmp = None


# --------------------------------------------------------------------------------------------------
# The engine server


class _Batcher:
    """Serializes engine use: generation requests that arrive within ``window_s`` run as one batch."""

    def __init__(self, engine: Engine, window_s: float = 0.02) -> None:
        self.engine = engine
        self.window_s = window_s
        self.lock = threading.Lock()  # weight updates and generation never overlap
        self.pending: queue.Queue = queue.Queue()
        threading.Thread(target=self._loop, daemon=True).start()

    def generate(self, requests: list[Request]) -> list[list[Output]]:
        done = threading.Event()
        box: dict[str, Any] = {}
        self.pending.put((requests, box, done))
        done.wait()
        if "error" in box:
            raise box["error"]
        return box["outputs"]

    def _loop(self) -> None:
        while True:
            jobs = [self.pending.get()]
            time.sleep(self.window_s)
            while True:
                try:
                    jobs.append(self.pending.get_nowait())
                except queue.Empty:
                    break
            flat = [r for reqs, _, _ in jobs for r in reqs]
            try:
                with self.lock:
                    outputs = self.engine.generate(flat)
                start = 0
                for reqs, box, _ in jobs:
                    box["outputs"] = outputs[start : start + len(reqs)]
                    start += len(reqs)
            except Exception as exc:  # noqa: BLE001 - reported to every waiting request
                for _, box, _ in jobs:
                    box["error"] = exc
            for _, _, done in jobs:
                done.set()


def make_server(
    engine: Engine, host: str = "127.0.0.1", port: int = 0, *, model_name: str = ""
) -> ThreadingHTTPServer:
    """An HTTP server speaking the protocol of the module docstring around ``engine`` (not started)."""
    batcher = _Batcher(engine)

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

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length", "0")))

        def do_GET(self):
            if self.path.rstrip("/") == "/health":
                self._reply(200, {"status": "ok", "model": model_name})
            else:
                self._reply(404, {"error": f"no route {self.path}"})

        def do_POST(self):
            route = self.path.rstrip("/")
            try:
                if route == "/generate":
                    requests = json.loads(self._body())["requests"]
                    self._reply(200, {"outputs": batcher.generate(requests)})
                elif route == "/update_weights":
                    from safetensors.torch import load

                    tensors = load(self._body())
                    with batcher.lock:
                        engine.load_weights(list(tensors.items()))
                    self._reply(200, {"status": "ok", "tensors": len(tensors)})
                elif route == "/reset_prefix_cache":
                    self._body()
                    with batcher.lock:
                        engine.reset_prefix_cache()
                    self._reply(200, {"status": "ok"})
                else:
                    self._reply(404, {"error": f"no route {self.path}"})
            except Exception as exc:  # noqa: BLE001 - the client sees the message with the status
                self._reply(500, {"error": f"{type(exc).__name__}: {exc}"})

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def serve(argv: list[str] | None = None) -> int:
    """``python -m pasodoble.rollout.vllm serve --model DIR [--port 8100] ...``: one role's engine."""
    ap = argparse.ArgumentParser(prog="python -m pasodoble.rollout.vllm serve")
    ap.add_argument("--model", required=True, help="model directory or hub name the engine starts from")
    ap.add_argument("--host", default="0.0.0.0")
    ap.add_argument("--port", type=int, default=8100)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    ap.add_argument("--max-model-len", type=int, default=8192)
    ap.add_argument("--tensor-parallel-size", type=int, default=1)
    ap.add_argument("--enforce-eager", action="store_true")
    ap.add_argument("--logprobs-mode", default="processed_logprobs")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
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
    )
    server = make_server(engine, args.host, args.port, model_name=args.model)
    print(
        f"pasodoble vLLM engine for {args.model} on http://{args.host}:{server.server_address[1]}", flush=True
    )
    server.serve_forever()
    return 0


if __name__ == "__main__":
    import sys

    if len(sys.argv) < 2 or sys.argv[1] != "serve":
        print("usage: python -m pasodoble.rollout.vllm serve --model DIR [options]", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(serve(sys.argv[2:]))
