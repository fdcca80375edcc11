"""A vLLM engine stand-in: the engine protocol the backend and the engine server call (``generate``,
``load_weights``, ``reset_prefix_cache``, ``sleep``, ``wake_up``), with every call recorded."""

from __future__ import annotations

import hashlib
import time

import torch


def fingerprint(named) -> str:
    """sha256 of (name, bytes) of every tensor, in order: which weights an engine holds."""
    h = hashlib.sha256()
    for name, t in named:
        h.update(name.encode())
        h.update(t.detach().contiguous().float().numpy().tobytes())
    return h.hexdigest()


class FakeEngine:
    """Echo engine: completion = [seed % 7 + 3, eos] or max_tokens copies of 5 (finish 'length').

    Records every call in ``events`` and, at each generation, the fingerprint of the weights it holds.
    """

    def __init__(self, eos: int, delay_s: float = 0.0, fail: bool = False) -> None:
        self.eos, self.delay_s, self.fail = eos, delay_s, fail
        self.requests: list[dict] = []
        self.calls: list[int] = []  # requests per generate call
        self.weights: dict[str, torch.Tensor] = {}
        self.events: list[str] = []
        self.served: list[str] = []  # fingerprint of the weights at each generation

    def generate(self, requests):
        if self.fail:
            raise RuntimeError("engine exploded")
        time.sleep(self.delay_s)
        self.events.append("generate")
        self.calls.append(len(requests))
        self.served.append(fingerprint(self.weights.items()))
        self.requests.extend(requests)
        out = []
        for r in requests:
            s = r["sampling"]
            group = []
            for j in range(s["n"]):
                if s["max_tokens"] <= 2:
                    ids, reason = [5] * s["max_tokens"], "length"
                else:
                    ids, reason = [(s["seed"] + j) % 7 + 3, r["prompt_token_ids"][-1], self.eos], "stop"
                group.append(
                    {
                        "token_ids": ids,
                        "finish_reason": reason,
                        "logprobs": [-0.5] * len(ids) if s["logprobs"] else None,
                    }
                )
            out.append(group)
        return out

    def load_weights(self, weights):
        self.events.append("load")
        for name, t in weights:
            self.weights[name] = t.clone()

    def reset_prefix_cache(self):
        self.events.append("reset")

    def sleep(self, level=2):
        self.events.append(f"sleep{level}")
        self.weights = {}  # level 2 discards the weights

    def wake_up(self, tags=None):
        self.events.append("wake_" + "+".join(tags or ["all"]))
