"""The rollout-backend interface: sample ``n`` completions per prompt, keep the trainer's token ids.

A backend receives prompts as token-id lists (already truncated and chat-templated by the caller)
and returns, per prompt, ``n`` ``Completion`` records whose ``completion_ids`` are exactly the
sampled tokens: trailing padding is removed, the EOS token is kept when it was generated. The
learner trains on these ids, so generation and training never re-tokenize text.

After every optimizer step the trainer calls ``sync_weights(model)`` so the backend samples from the
updated policy (a no-op for the transformers backend, which generates with the training model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import torch

FinishReason = Literal["eos", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. ``temperature`` > 0; ``top_p`` = 1 and ``top_k`` = 0 disable those filters."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 256
    n: int = 1
    seed: int = 0
    return_logprobs: bool = False
    # Per-prompt seeds (one per prompt of the call): each prompt's samples then depend only on its own
    # seed, not on which prompts share the call (how ``pasodoble eval`` batches problems). None = ``seed``.
    seeds: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0; got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1]; got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 disables it); got {self.top_k}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1; got {self.max_new_tokens}")
        if self.n < 1:
            raise ValueError(f"n must be >= 1; got {self.n}")


@dataclass
class Completion:
    """One sampled completion of one prompt.

    ``logprobs[t]`` is the log-probability of ``completion_ids[t]`` under the temperature-scaled
    policy (see the backend for how top-k/top-p filtering enters); None unless requested.
    """

    prompt_ids: list[int]
    completion_ids: list[int]
    text: str
    finish_reason: FinishReason
    logprobs: list[float] | None = None

    @property
    def truncated(self) -> bool:
        """True when generation stopped at max_new_tokens rather than at EOS."""
        return self.finish_reason == "length"


@runtime_checkable
class RolloutBackend(Protocol):
    """What the trainer needs from a generation engine."""

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        """Return ``params.n`` completions for each prompt, in prompt order; deterministic per seed."""
        ...

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Make the backend sample from ``model``'s current weights (called after each update)."""
        ...
