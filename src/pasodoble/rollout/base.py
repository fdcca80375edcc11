"""The generation-backend interface: sample ``n`` completions per prompt, keep the trainer's token ids.

A backend receives prompts as token-id lists (already truncated and chat-templated by the caller)
and returns, per prompt, ``n`` ``Completion`` records whose ``completion_ids`` are exactly the
sampled tokens: trailing padding is removed, the EOS token is kept when it was generated. The
learner trains on these ids, so generation and training never re-tokenize text.

Every backend derives from ``GenerationBackend``, whose lifecycle the trainer drives (docs/learner.md):
``generate``; ``sync_weights(model)`` after every update; ``pop_sync_seconds()`` for ``time/weight_sync``;
``hold()`` on every process, then ``local()`` on the main process for a generation on it alone (the
in-training evaluation); ``close()`` at the end. ``RoleSlot`` (``rollout/slot.py``) is the one mechanism
behind the generators that hold one role's weights at a time.

**Stop tokens.** Every backend stops a completion at its default ``stop_token_ids``: the model's and
tokenizer's EOS ids *and* the chat template's end-of-turn id. Base models (Qwen3-*-Base, Qwen2.5) list
only ``<|endoftext|>`` as EOS, while every prompt here is a chat turn that ends with ``<|im_end|>``; without
the end-of-turn id a completion runs on into invented turns up to ``max_new_tokens``.
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass
from typing import Any, Literal

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


class GenerationBackend(abc.ABC):
    """A generation engine with the lifecycle the trainer drives; subclasses write ``generate`` and
    ``sync_weights`` and override the rest where they have something to do.

    The trainer's calls, in order: ``generate`` (every process, in the same order: an empty prompt list
    where a process has no share, since a weight load may be a collective); ``sync_weights(model)`` after
    each update (every process); ``pop_sync_seconds()`` when it reports ``time/weight_sync``; for an
    evaluation on the main process alone, ``hold()`` on every process, then ``local().generate(...)`` on the
    main one; ``close()`` when the run ends.
    """

    _sync_seconds: float = 0.0  # seconds spent loading weights lazily, not yet reported

    @abc.abstractmethod
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        """Return ``params.n`` completions for each prompt, in prompt order; deterministic per seed."""

    @abc.abstractmethod
    def sync_weights(self, model: torch.nn.Module) -> None:
        """Make the backend sample from ``model``'s current weights (called after each update)."""

    def pop_sync_seconds(self) -> float:
        """Seconds spent loading weights outside ``sync_weights`` (lazily, before a generation) since the
        last call; the caller times ``sync_weights`` itself. Backends that load lazily add to
        ``_sync_seconds``; 0.0 for the others."""
        seconds, self._sync_seconds = self._sync_seconds, 0.0
        return seconds

    def hold(self) -> None:  # noqa: B027 - a default on purpose: most backends have nothing to do
        """Every process calls this before the main process generates alone through ``local()``: a backend
        whose weight load is a collective loads the current weights now and keeps them until the next
        collective ``generate``. Nothing to do by default."""

    def local(self) -> GenerationBackend:
        """A view whose ``generate`` involves this process only (after ``hold()``); the backend itself by
        default."""
        return self

    def close(self) -> None:  # noqa: B027 - a default on purpose: most backends hold nothing
        """Release what the backend holds (the run is over). Nothing to do by default."""


# The name of the interface before it became a base class (issue 25); the same class.
RolloutBackend = GenerationBackend


def device_time(device: Any) -> float:
    """Wall-clock seconds, after the device has finished its queued work (CUDA only)."""
    if getattr(device, "type", "cpu") == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


_TURN_MARK = "\u2063PASODOBLE_END_OF_TURN_PROBE\u2063"


def end_of_turn_ids(tokenizer: Any) -> list[int]:
    """Ids of the special token that closes an assistant turn in ``tokenizer``'s chat template.

    The template renders a conversation whose assistant turn is a marker string; the first token after
    the marker is the end-of-turn token when it is a special (added) token: ``<|im_end|>`` for ChatML
    (Qwen), ``<|eot_id|>`` for Llama 3. Empty without a chat template or when the template closes the
    turn with ordinary text.
    """
    if not getattr(tokenizer, "chat_template", None):
        return []
    messages = [{"role": "user", "content": "x"}, {"role": "assistant", "content": _TURN_MARK}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:  # noqa: BLE001 - a template that cannot render this conversation has no answer here
        return []
    if not isinstance(text, str) or _TURN_MARK not in text:
        return []
    after = text.split(_TURN_MARK, 1)[1]
    ids = tokenizer(after, add_special_tokens=False)["input_ids"] if after else []
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    if ids and int(ids[0]) in added and getattr(added[int(ids[0])], "special", True):
        return [int(ids[0])]
    return []


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Default stop ids of a backend: the model's generation-config EOS ids, the tokenizer's EOS and the
    chat template's end-of-turn id (sorted, without duplicates)."""
    ids: list[int] = []
    gen_cfg = getattr(model, "generation_config", None)
    eos = getattr(gen_cfg, "eos_token_id", None) if gen_cfg is not None else None
    if isinstance(eos, int):
        ids.append(eos)
    elif isinstance(eos, (list, tuple)):
        ids.extend(int(e) for e in eos)
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.append(int(tokenizer.eos_token_id))
    ids.extend(end_of_turn_ids(tokenizer))
    return sorted(set(ids))
