"""Teachers for the cold-start data: a local model (our rollout backend) or a chat-completions endpoint.

Both answer ``TeacherRequest``s (one chat conversation, ``n`` samples) with ``TeacherReply``s (the
``n`` texts and the token usage). ``run_requests`` puts a ``Journal`` in front of a teacher: every
finished request is appended to a JSONL file as one line, flushed and fsynced, keyed by the request's
deterministic id; a rerun skips the ids already there, so a crash or an abort loses at most the
requests in flight and never pays for a request twice.

``ChatCompletionsTeacher`` speaks the OpenAI chat-completions wire format over the standard library
(``urllib``): ``POST {base_url}/chat/completions`` with ``{"model", "messages", "n", "temperature",
"max_tokens", "seed"}``, reading ``choices[i].message.content`` and ``usage``. Requests run in a
thread pool of ``concurrency`` workers, each with a socket timeout; HTTP 429, 5xx, connection errors,
timeouts and unreadable bodies are retried with exponential back-off (``backoff_s * 2**attempt``,
jittered, capped at 60 s, or the server's ``Retry-After``); other HTTP errors (401, 404, ...) and
exhausted retries abort the run with a one-line ``UserError``. A reasoning model's separate reasoning
field (``reasoning_content`` or ``reasoning``) is put back in front of the answer as
``<think>...</think>``, the format our prompts and parser expect.
"""

from __future__ import annotations

import json
import os
import random
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Any, Protocol

from pasodoble.errors import UserError

DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
MAX_BACKOFF_S = 60.0


@dataclass(frozen=True)
class TeacherRequest:
    """One chat request: ``id`` is deterministic (see ``build_data.request_id``); ``seed`` derives from it."""

    id: str
    messages: tuple[tuple[str, str], ...]  # (role, content) pairs, hashable
    n: int
    temperature: float
    max_tokens: int
    seed: int

    def message_dicts(self) -> list[dict[str, str]]:
        return [{"role": r, "content": c} for r, c in self.messages]


@dataclass
class TeacherReply:
    """The ``n`` sampled texts of one request and the tokens it cost (None when not reported)."""

    id: str
    texts: list[str]
    usage: dict[str, int] | None
    model: str


class Teacher(Protocol):
    """Answers requests, calling ``on_reply`` once per finished request (from any thread)."""

    name: str  # for humans: model and endpoint
    model: str  # the model name alone: part of every request id (so a new port or host keeps them)

    def complete(
        self, requests: Sequence[TeacherRequest], on_reply: Callable[[TeacherReply], None]
    ) -> None: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------------------------------
# The journal


class Journal:
    """Append-only JSONL of finished requests, keyed by request id; safe to append from many threads.

    A torn last line (the process died mid-write) is ignored on load: that request simply runs again.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._replies: dict[str, TeacherReply] = {}
        self._lock = threading.Lock()
        if self.path.exists():
            with open(self.path, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        record = json.loads(line)
                        self._replies[record["id"]] = TeacherReply(**record)
                    except (json.JSONDecodeError, KeyError, TypeError):
                        continue
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def __contains__(self, request_id: str) -> bool:
        return request_id in self._replies

    def __len__(self) -> int:
        return len(self._replies)

    def get(self, request_id: str) -> TeacherReply | None:
        return self._replies.get(request_id)

    def append(self, reply: TeacherReply) -> None:
        line = json.dumps(asdict(reply), ensure_ascii=False) + "\n"
        with self._lock:
            self._fh.write(line)
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._replies[reply.id] = reply

    def close(self) -> None:
        self._fh.close()


def run_requests(
    teacher: Teacher,
    journal: Journal,
    requests: Sequence[TeacherRequest],
    *,
    desc: str,
    progress: bool = True,
) -> dict[str, TeacherReply]:
    """Replies to ``requests`` by id: journaled ones are reused, the others are sent and journaled."""
    from tqdm import tqdm

    pending = [r for r in requests if r.id not in journal]
    if pending:
        bar = tqdm(total=len(pending), desc=desc, unit="req", dynamic_ncols=True, disable=not progress)
        lock = threading.Lock()

        def on_reply(reply: TeacherReply) -> None:
            journal.append(reply)
            with lock:
                bar.update(1)

        try:
            teacher.complete(pending, on_reply)
        finally:
            bar.close()
    return {r.id: journal.get(r.id) for r in requests}  # type: ignore[misc]


# --------------------------------------------------------------------------------------------------
# OpenAI-compatible endpoint


def is_url(spec: str) -> bool:
    return spec.startswith(("http://", "https://"))


def api_key_from_env(var: str | None) -> str | None:
    """The key in ``var``; UserError when a named variable is unset. None: ``OPENAI_API_KEY`` if set."""
    if var is None:
        return os.environ.get(DEFAULT_API_KEY_ENV) or None
    value = os.environ.get(var)
    if not value:
        raise UserError(
            f"environment variable {var} (--api-key-env) is not set; export the endpoint's API key in it"
        )
    return value


def _retryable_status(code: int) -> bool:
    return code == 429 or code >= 500


def reply_text(message: dict[str, Any]) -> str:
    """The answer text of one chat message, with a separate reasoning field restored as <think>...</think>."""
    content = message.get("content") or ""
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning.strip() and "</think>" not in content:
        return f"<think>\n{reasoning.strip()}\n</think>\n\n{content.lstrip()}"
    return content


class ChatCompletionsTeacher:
    """A teacher behind an OpenAI-compatible ``/chat/completions`` endpoint (see the module docstring).

    Args:
        base_url: e.g. ``http://localhost:8000/v1`` (``/chat/completions`` is appended unless present).
        model: the served model name; None asks ``GET {base_url}/models`` and takes the first.
        api_key: sent as ``Authorization: Bearer``; None sends no header.
        concurrency: requests in flight at once.
        timeout_s: socket timeout of one HTTP request.
        max_retries: retries of one request after its first failure.
        backoff_s: first back-off delay; doubles per retry.
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        api_key: str | None = None,
        concurrency: int = 8,
        timeout_s: float = 600.0,
        max_retries: int = 6,
        backoff_s: float = 1.0,
    ) -> None:
        if concurrency < 1:
            raise UserError(f"--concurrency must be >= 1; got {concurrency}")
        if timeout_s <= 0:
            raise UserError(f"--timeout must be > 0 seconds; got {timeout_s}")
        if max_retries < 0:
            raise UserError(f"--max-retries must be >= 0; got {max_retries}")
        base = base_url.rstrip("/")
        if base.endswith("/chat/completions"):
            base = base[: -len("/chat/completions")]
        self.base_url = base
        self.url = base + "/chat/completions"
        self.api_key = api_key
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self._abort = threading.Event()
        self.model = model or self._first_model()
        self.name = f"{self.model} @ {self.base_url}"

    # ------------------------------------------------------------------ HTTP with retries

    def _http(self, url: str, body: dict[str, Any] | None) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = None if body is None else json.dumps(body).encode()
        last = ""
        for attempt in range(self.max_retries + 1):
            if self._abort.is_set():
                raise UserError("aborted")
            delay = None
            try:
                req = urllib.request.Request(
                    url, data=data, headers=headers, method="GET" if body is None else "POST"
                )
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    payload = json.loads(resp.read().decode("utf-8"))
                if not isinstance(payload, dict):
                    raise ValueError("the response is not a JSON object")
                return payload
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode("utf-8", "replace")[:200].replace("\n", " ")
                last = f"HTTP {exc.code} {detail}".strip()
                if not _retryable_status(exc.code):
                    raise UserError(f"teacher endpoint {url} answered {last}") from None
                retry_after = exc.headers.get("Retry-After") if exc.headers else None
                if retry_after and retry_after.strip().isdigit():
                    delay = min(float(retry_after), MAX_BACKOFF_S)
            except (urllib.error.URLError, HTTPException, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", None) or exc
                last = f"{type(exc).__name__}: {reason}"
            if attempt < self.max_retries:
                if delay is None:
                    delay = min(self.backoff_s * 2**attempt, MAX_BACKOFF_S) * (1 + 0.25 * random.random())
                if self._abort.wait(delay):
                    raise UserError("aborted")
        raise UserError(
            f"teacher endpoint {url} failed after {self.max_retries + 1} attempts ({last}); "
            "check the URL and that the server is up, or raise --max-retries/--timeout"
        )

    def _first_model(self) -> str:
        payload = self._http(self.base_url + "/models", None)
        data = payload.get("data")
        if not data or not isinstance(data, list) or "id" not in data[0]:
            raise UserError(
                f"{self.base_url}/models lists no model; pass the model name with --teacher-model"
            )
        return str(data[0]["id"])

    def _one(self, request: TeacherRequest) -> TeacherReply:
        body = {
            "model": self.model,
            "messages": request.message_dicts(),
            "n": request.n,
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
            "seed": request.seed,
        }
        payload = self._http(self.url, body)
        choices = payload.get("choices")
        if not isinstance(choices, list):
            raise UserError(f"teacher endpoint {self.url} returned no 'choices' list: {str(payload)[:200]}")
        choices = sorted(choices, key=lambda c: c.get("index", 0))
        texts = [reply_text(c.get("message") or {}) for c in choices]
        usage = payload.get("usage")
        if isinstance(usage, dict):
            usage = {
                k: int(v) for k, v in usage.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            }
        else:
            usage = None
        return TeacherReply(request.id, texts, usage, str(payload.get("model") or self.model))

    def complete(self, requests: Sequence[TeacherRequest], on_reply: Callable[[TeacherReply], None]) -> None:
        """Send ``requests`` with at most ``concurrency`` in flight; the first fatal error aborts the rest."""
        self._abort.clear()
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="teacher")
        try:
            futures = {pool.submit(self._one, r): r for r in requests}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for fut in done:
                    if fut.exception() is None:
                        on_reply(fut.result())
                failed = [f for f in done if f.exception() is not None]
                if failed:
                    self._abort.set()
                    for f in pending:
                        f.cancel()
                    # keep the replies that still arrive from requests already in flight
                    for f in wait(pending).done:
                        if not f.cancelled() and f.exception() is None:
                            on_reply(f.result())
                    errors = [f.exception() for f in failed]
                    real = [e for e in errors if str(e) != "aborted"]
                    raise (real or errors)[0]  # type: ignore[misc]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        self._abort.set()


# --------------------------------------------------------------------------------------------------
# Local model


class LocalTeacher:
    """A local model (``'tiny'``, a directory or a cached hub name) sampled with ``HFBackend``.

    Requests with the same sampling settings are generated together, ``generation_batch_size``
    sequences per forward batch; each chunk's seed comes from its first request. Usage counts the
    prompt and completion tokens. A one-message request is rendered exactly as the RL rollouts render
    a prompt (``prompts.apply_chat``: the chat template, or the plain format without one, and
    ``<think>\\n`` appended when ``open_thinking``, as ``rollout.open_thinking``).
    """

    def __init__(
        self,
        name_or_path: str,
        *,
        seed: int = 0,
        generation_batch_size: int = 16,
        dtype: str = "float32",
        open_thinking: bool = False,
    ):
        import torch

        from pasodoble.config import ModelConfig
        from pasodoble.models import load_model_and_tokenizer, set_cpu_threads
        from pasodoble.rollout.hf import HFBackend

        model, tokenizer = load_model_and_tokenizer(name_or_path, ModelConfig(dtype=dtype), seed=seed)
        if torch.cuda.is_available():
            model = model.to("cuda")
        set_cpu_threads(model, None)  # one thread for a small model on CPU (as training does)
        self.tokenizer = tokenizer
        self.backend = HFBackend(model, tokenizer, generation_batch_size=generation_batch_size)
        self.generation_batch_size = generation_batch_size
        self.open_thinking = open_thinking
        self.model = name_or_path
        self.name = name_or_path

    def render(self, request: TeacherRequest, *, open_thinking: bool | None = None) -> str:
        """The prompt text the model continues: the RL rendering for one user message."""
        from pasodoble.prompts import apply_chat

        opened = self.open_thinking if open_thinking is None else open_thinking
        if len(request.messages) == 1 and request.messages[0][0] == "user":
            return apply_chat(request.messages[0][1], self.tokenizer, open_thinking=opened)
        return self.tokenizer.apply_chat_template(
            request.message_dicts(), tokenize=False, add_generation_prompt=True
        )

    def opens_thinking(self, request: TeacherRequest) -> bool:
        """Whether the rendered prompt ends inside a thinking section (the answer starts inside it)."""
        from pasodoble.prompts import opens_thinking

        return opens_thinking(self.render(request))

    def thinking_prefix(self, request: TeacherRequest) -> str:
        """``<think>\\n`` when ``open_thinking`` appended it after the chat template, else ''."""
        from pasodoble.prompts import THINK_OPEN, opens_thinking

        if self.open_thinking and not opens_thinking(self.render(request, open_thinking=False)):
            return THINK_OPEN
        return ""

    def complete(self, requests: Sequence[TeacherRequest], on_reply: Callable[[TeacherReply], None]) -> None:
        from pasodoble.rollout.base import SamplingParams

        groups: dict[tuple[int, float, int], list[TeacherRequest]] = {}
        for r in requests:
            groups.setdefault((r.n, r.temperature, r.max_tokens), []).append(r)
        for (n, temperature, max_tokens), group in groups.items():
            per_chunk = max(1, self.generation_batch_size // n)
            for start in range(0, len(group), per_chunk):
                chunk = group[start : start + per_chunk]
                prompts = [
                    self.tokenizer(self.render(r), add_special_tokens=False)["input_ids"] for r in chunk
                ]
                params = SamplingParams(
                    temperature=temperature, max_new_tokens=max_tokens, n=n, seed=chunk[0].seed
                )
                outputs = self.backend.generate(prompts, params)
                for r, p, completions in zip(chunk, prompts, outputs, strict=True):
                    completion_tokens = sum(len(c.completion_ids) for c in completions)
                    usage = {
                        "prompt_tokens": len(p),
                        "completion_tokens": completion_tokens,
                        "total_tokens": len(p) + completion_tokens,
                    }
                    on_reply(TeacherReply(r.id, [c.text for c in completions], usage, self.name))

    def close(self) -> None:
        pass


def build_teacher(
    spec: str,
    *,
    model: str | None = None,
    api_key_env: str | None = None,
    concurrency: int = 8,
    timeout_s: float = 600.0,
    max_retries: int = 6,
    backoff_s: float = 1.0,
    seed: int = 0,
    generation_batch_size: int = 16,
    dtype: str = "float32",
    open_thinking: bool = False,
) -> Teacher:
    """A ``ChatCompletionsTeacher`` for an http(s) URL, else a ``LocalTeacher``.

    ``open_thinking`` applies to a local model (an endpoint renders prompts with its own chat template;
    a separate reasoning field comes back as ``<think>...</think>``, see ``reply_text``).
    """
    if is_url(spec):
        return ChatCompletionsTeacher(
            spec,
            model,
            api_key=api_key_from_env(api_key_env),
            concurrency=concurrency,
            timeout_s=timeout_s,
            max_retries=max_retries,
            backoff_s=backoff_s,
        )
    if api_key_env is not None:
        raise UserError(f"--api-key-env applies to http(s) endpoints only; {spec!r} is a local model")
    return LocalTeacher(
        spec, seed=seed, generation_batch_size=generation_batch_size, dtype=dtype, open_thinking=open_thinking
    )
