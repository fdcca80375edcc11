"""A tiny OpenAI-compatible chat-completions server for tests (http.server in a thread, 127.0.0.1:0).

It speaks the real wire format (``POST /v1/chat/completions``, ``GET /v1/models``, JSON bodies, a
``usage`` block, ``Authorization: Bearer``) and answers with a ``responder(messages, n, seed) ->
list[str]``: ``scripted_responder`` below (deterministic arithmetic, with some answers made invalid
or wrong on purpose) or any callable, e.g. one that samples a tiny model. ``fail_after=k`` makes
every request after the k-th successful one fail with HTTP 500 (a server dying halfway).
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Responder = Callable[[list[dict], int, int], list[str]]

_NUMBERS = re.compile(r"\d+")


def scripted_responder(messages: list[dict], n: int, seed: int) -> list[str]:
    """Proposer prompt: a sum of the first two numbers of the snippet (every 5th snippet: no problem tags;
    every 7th: a proposed answer off by one, so the check disagrees). Solver prompt: the right sum."""
    text = messages[-1]["content"]
    if "<snippet>" in text:
        snippet = text.split("<snippet>", 1)[1].split("</snippet>", 1)[0]
        nums = [int(x) for x in _NUMBERS.findall(snippet)] + [3, 4]
        a, b = nums[0] % 50 + 1, nums[1] % 50 + 1
        key = sum(map(ord, snippet))
        answer = a + b + (1 if key % 7 == 0 else 0)
        if key % 5 == 0:
            return [f"<think>\nA sum.\n</think>\nWhat is {a} plus {b}? \\boxed{{{answer}}}"] * n
        return [
            f"<think>\nThe passage has {a} and {b}; I ask for their sum.\n</think>\n"
            f"<problem>A box holds {a} red and {b} blue marbles. How many marbles are in it?</problem>\n"
            f"Add the counts: {a} + {b}. The answer is \\boxed{{{answer}}}."
        ] * n
    nums = [int(x) for x in _NUMBERS.findall(text.split("\\boxed{}", 1)[-1])]
    total = sum(nums[:2]) if len(nums) >= 2 else 0
    return [
        f"<think>\nAdd them (way {i}).\n</think>\nThere are {total} marbles: \\boxed{{{total}}}."
        for i in range(n)
    ]


class ChatServer:
    """Context manager: ``with ChatServer(responder) as s: s.url`` is the base URL (``.../v1``)."""

    def __init__(
        self,
        responder: Responder = scripted_responder,
        *,
        model: str = "scripted-teacher",
        api_key: str | None = None,
        fail_after: int | None = None,
    ) -> None:
        self.responder = responder
        self.model = model
        self.api_key = api_key
        self.fail_after = fail_after
        self.served = 0  # successful chat completions
        self.failed = 0
        self.prompts: Counter[str] = Counter()  # successful completions per (messages, n, seed) body
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> ChatServer:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def _send(self, code: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                if outer.api_key is None:
                    return True
                if self.headers.get("Authorization") == f"Bearer {outer.api_key}":
                    return True
                self._send(401, {"error": {"message": "invalid api key"}})
                return False

            def do_GET(self) -> None:
                if not self._authorized():
                    return
                if self.path.rstrip("/") == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": outer.model, "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                if not self._authorized():
                    return
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, {"error": {"message": "not found"}})
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer._lock:
                    if outer.fail_after is not None and outer.served >= outer.fail_after:
                        outer.failed += 1
                        fail = True
                    else:
                        fail = False
                if fail:
                    self._send(500, {"error": {"message": "server going down"}})
                    return
                n = int(body.get("n", 1))
                texts = outer.responder(body["messages"], n, int(body.get("seed", 0)))
                prompt_tokens = sum(len(m["content"].split()) for m in body["messages"])
                completion_tokens = sum(len(t.split()) for t in texts)
                with outer._lock:
                    outer.served += 1
                    outer.prompts[json.dumps([body["messages"], n, body.get("seed")])] += 1
                self._send(
                    200,
                    {
                        "id": f"chatcmpl-{outer.served}",
                        "object": "chat.completion",
                        "model": outer.model,
                        "choices": [
                            {
                                "index": i,
                                "message": {"role": "assistant", "content": t},
                                "finish_reason": "stop",
                            }
                            for i, t in enumerate(texts)
                        ],
                        "usage": {
                            "prompt_tokens": prompt_tokens,
                            "completion_tokens": completion_tokens,
                            "total_tokens": prompt_tokens + completion_tokens,
                        },
                    },
                )

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()
