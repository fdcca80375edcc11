"""Our engine server (``python -m pasodoble.rollout.vllm serve``, one per role) and its client.

The wire protocol (routes, bodies, the weight hash, the token, the body caps) is in docs/scaling.md
("The engine server's protocol"). The main training process sends one request per role per step and
pushes weights in safetensors buckets after every update and at step 0; the server checks the order of
the buckets and reports the sha256 of what it loaded on ``/health``.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import ipaddress
import json
import os
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import torch

from pasodoble.errors import UserError
from pasodoble.rollout.vllm.common import Engine, Output, Request
from pasodoble.rollout.vllm.local import LocalEngine

TOKEN_ENV = "PASODOBLE_ENGINE_TOKEN"

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
        "pending": [],  # an update's tensors, for an engine that loads a whole update at once
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

        def _drain(self, limit: int) -> None:
            try:
                n = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                return
            if 0 < n <= limit:
                while n > 0:
                    chunk = self.rfile.read(min(n, 1 << 20))
                    if not chunk:
                        return
                    n -= len(chunk)

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
                    # read and drop a body within the route's cap first: a client still sending it would
                    # see a broken pipe instead of the 401
                    self._drain(max_body_bytes if route == "/update_weights" else max_json_bytes)
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
                    state.update(update_id=update_id, hasher=hashlib.sha256(), buckets=0, pending=[])
                elif update_id != state["update_id"] or bucket != state["buckets"]:
                    raise _HTTPError(409, f"bucket {bucket} of update {update_id[:8]} arrived out of order")
                if getattr(engine, "streams_weights", True):
                    with ThreadPoolExecutor(max_workers=1) as pool:  # hash while the engine loads
                        hashing = pool.submit(state["hasher"].update, body)
                        engine.load_weights(list(tensors.items()))
                        hashing.result()
                else:  # loaded at /finish_update, every tensor of a layer in one call
                    state["hasher"].update(body)
                    state["pending"].extend(tensors.items())
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
                if state["pending"]:
                    engine.load_weights(state["pending"])
                    state["pending"] = []
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
    ap.add_argument(
        "--kv-cache-gib",
        type=float,
        default=None,
        help="KV cache size in GiB (default: --gpu-memory-utilization decides on CUDA, 1 GiB on CPU)",
    )
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
        kv_cache_gib=args.kv_cache_gib,
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
