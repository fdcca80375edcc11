"""Transformers rollout backend: batched, left-padded sampling with the training model itself.

The decode loop is written out here instead of calling ``model.generate`` so that three properties
hold by construction:

- **Determinism per seed.** All randomness comes from one ``torch.Generator`` seeded with
  ``SamplingParams.seed``; the global RNG is never read or advanced.
- **Identical token ids.** ``completion_ids`` are the sampled ids; generation stops per sequence at
  the first EOS (kept in the completion), and nothing after it is returned.
- **Matching log-probabilities.** ``logprobs[t]`` is ``log_softmax(logits / temperature)`` at the
  sampled token, computed from the same fp32 logits the sample was drawn from, *before* top-k /
  top-p filtering. That is the quantity the learner computes (``grpo.completion_logprobs``), so with
  ``top_p=1, top_k=0`` the two agree to float rounding (tested to 1e-4); with filtering on, the
  sampling distribution is the renormalized filtered one and these values are the unfiltered
  policy's, which is what the importance ratio of the loss uses.

Prompts are left-padded in chunks of ``generation_batch_size`` sequences; position ids are derived
from the attention mask so padded rows see the same positions as unpadded ones. A chunk whose
prompts all have one length runs without a mask (the cheaper causal path).

**One chunk loop, two hooks.** ``_generate_chunk`` pads, prefills, samples and times a chunk; how the model
runs is two hooks: ``_prefill(model, chunk)`` (the prompt forward, returning the chunk's decode state and
the first logits) and ``_decode_step(model, state, tok_B)`` (one token per row through that state). ``hf_batched`` overrides only these.

**Compute dtype.** With ``compute_dtype`` set and different from the model's parameter dtype (float32
master weights, bfloat16 compute), each ``generate`` call runs under one ``torch.autocast`` region, so
the weights are cast once per call and reused by every decode step.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass
from typing import Any

import torch

from pasodoble.rollout.base import (
    Completion,
    GenerationBackend,
    SamplingParams,
    device_time,
    stop_token_ids,
)
from pasodoble.seeds import derive_seed


def filter_logits(scaled_logits_BV: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Set logits outside the top-k set and outside the top-p nucleus to -inf (at least one token stays)."""
    logits = scaled_logits_BV
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        mass_before = torch.cumsum(probs, dim=-1) - probs
        remove_sorted = mass_before > top_p
        remove_sorted[..., 0] = False
        remove = torch.zeros_like(remove_sorted).scatter(-1, sorted_idx, remove_sorted)
        logits = logits.masked_fill(remove, float("-inf"))
    return logits


@dataclass
class Chunk:
    """One chunk's prompts, left-padded (``mask_BP`` is 1 on prompt tokens), and how many tokens to sample."""

    input_ids_BP: torch.Tensor
    mask_BP: torch.Tensor
    max_new_tokens: int


@dataclass
class DecodeState:
    """What one chunk's decode carries from step to step (``_prefill`` makes it, ``_decode_step`` advances
    it). ``stats()`` adds backend-specific entries to ``last_stats`` once the chunk is done."""

    cache: Any
    mask_BP: torch.Tensor | None = None  # the attention mask of a padded chunk; None: no padding
    next_pos_B: torch.Tensor | None = None  # the next position of each row of a padded chunk

    def stats(self) -> dict[str, float]:
        return {}


class HFBackend(GenerationBackend):
    """``GenerationBackend`` on a transformers causal LM (CPU or GPU), sharing the training model.

    Args:
        model: the (unwrapped) causal LM to sample from; switched to eval mode while generating.
        tokenizer: used to decode completions to text and for the pad/eos ids.
        generation_batch_size: sequences per forward batch (prompts x n are chunked by this).
        eos_token_ids: ids that end a completion; default ``base.stop_token_ids``: the model's
            generation-config EOS ids, the tokenizer's EOS and the chat template's end-of-turn id.
        compute_dtype: decode under ``torch.autocast`` in this dtype when it differs from the
            parameters' (e.g. bfloat16 over float32 master weights); None = the parameters' dtype.

    After each ``generate``, ``last_stats`` holds its ``prefill_s``, ``decode_s`` and ``decode_steps``
    (summed over chunks; on CUDA the device is synchronized at those boundaries only).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        *,
        generation_batch_size: int = 64,
        eos_token_ids: list[int] | None = None,
        compute_dtype: torch.dtype | None = None,
    ) -> None:
        if generation_batch_size < 1:
            raise ValueError(f"generation_batch_size must be >= 1; got {generation_batch_size}")
        self.model = model
        self._cache_kw = _cache_keyword(model)
        self.tokenizer = tokenizer
        self.generation_batch_size = generation_batch_size
        self.compute_dtype = compute_dtype
        if eos_token_ids is None:
            eos_token_ids = stop_token_ids(model, tokenizer)
        if not eos_token_ids:
            raise ValueError("no EOS token id: pass eos_token_ids or set tokenizer.eos_token")
        self.eos_token_ids = sorted(set(eos_token_ids))
        pad = tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else self.eos_token_ids[0]
        self.last_stats: dict[str, float] = {}

    def sync_weights(self, model: torch.nn.Module) -> None:
        """The backend generates with the training model itself: only the reference is updated."""
        self.model = model
        self._cache_kw = _cache_keyword(model)

    def _generation_model(self, device: torch.device) -> torch.nn.Module:
        """The module the decode runs on (the training model here; a replica in subclasses)."""
        return self.model

    def _autocast(self, model: torch.nn.Module, device: torch.device):
        """One autocast region per call when the compute dtype differs from the parameters' dtype."""
        dtype = next(model.parameters()).dtype
        if self.compute_dtype is None or self.compute_dtype == dtype:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.compute_dtype)

    @torch.inference_mode()
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        """Sample ``params.n`` completions per prompt; see the module docstring for the guarantees."""
        if any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        if params.seeds is not None and len(params.seeds) != len(prompts):
            raise ValueError(f"params.seeds has {len(params.seeds)} seeds for {len(prompts)} prompts")
        device = next(self.model.parameters()).device
        if params.seeds is None:
            generator: torch.Generator | list[torch.Generator] = torch.Generator(device=device)
            generator.manual_seed(params.seed)
        else:  # one generator per sampled row, seeded from its prompt's seed and its sample index
            generator = [_row_generator(seed, j, device) for seed in params.seeds for j in range(params.n)]
        flat = [p for p in prompts for _ in range(params.n)]
        self.last_stats = {"prefill_s": 0.0, "decode_s": 0.0, "decode_steps": 0}
        if not flat:
            return [[] for _ in prompts]
        model = self._generation_model(device)
        was_training = model.training
        model.eval()
        try:
            rows: list[tuple[list[int], list[float], bool]] = []
            with self._autocast(model, device):
                for start in range(0, len(flat), self.generation_batch_size):
                    chunk = flat[start : start + self.generation_batch_size]
                    gen = (
                        generator
                        if isinstance(generator, torch.Generator)
                        else generator[start : start + len(chunk)]
                    )
                    rows.extend(self._generate_chunk(model, chunk, params, gen, device))
        finally:
            model.train(was_training)
        out: list[list[Completion]] = []
        for i, prompt in enumerate(prompts):
            group = []
            for ids, logps, ended in rows[i * params.n : (i + 1) * params.n]:
                group.append(
                    Completion(
                        prompt_ids=list(prompt),
                        completion_ids=ids,
                        text=self.tokenizer.decode(ids, skip_special_tokens=True),
                        finish_reason="eos" if ended else "length",
                        logprobs=logps if params.return_logprobs else None,
                    )
                )
            out.append(group)
        return out

    def _generate_chunk(
        self,
        model: torch.nn.Module,
        prompts: list[list[int]],
        params: SamplingParams,
        generator: torch.Generator | list[torch.Generator],
        device,
    ) -> list[tuple[list[int], list[float], bool]]:
        """Pad, prefill and decode one chunk (the hooks run the model); add its timings to ``last_stats``."""
        t0 = device_time(device)
        input_ids_BP, mask_BP = left_pad(prompts, self.pad_token_id, device)
        B = input_ids_BP.shape[0]
        T = params.max_new_tokens
        state, logits_BV = self._prefill(model, Chunk(input_ids_BP, mask_BP, T))
        sampler = StepSampler(params, generator, self.eos_token_ids, self.pad_token_id, B, logits_BV, device)
        t1 = device_time(device)
        for t in range(T):
            done = sampler.step(logits_BV)
            if t == T - 1 or done:
                break
            logits_BV = self._decode_step(model, state, sampler.last_tokens_B)
        t2 = device_time(device)
        rows = sampler.rows()
        self.last_stats["prefill_s"] += t1 - t0
        self.last_stats["decode_s"] += t2 - t1
        self.last_stats["decode_steps"] += sampler.steps
        for key, value in state.stats().items():
            self.last_stats[key] = self.last_stats.get(key, 0) + value
        return rows

    def _prefill(self, model: torch.nn.Module, chunk: Chunk) -> tuple[DecodeState, torch.Tensor]:
        """The prompt forward of a chunk: its decode state and the fp32 logits ``[B, V]`` of the last position.

        Transformers' dynamic cache; a chunk without padding runs without a mask (the cheaper causal path).
        """
        input_ids_BP, mask_BP = chunk.input_ids_BP, chunk.mask_BP
        if not bool((mask_BP == 0).any()):
            cache, logits_BV = self._forward(model, input_ids_BP, None, logits_to_keep=1)
            return DecodeState(cache), logits_BV
        positions_BP = prompt_positions(mask_BP)
        cache, logits_BV = self._forward(
            model, input_ids_BP, None, attention_mask=mask_BP, position_ids=positions_BP, logits_to_keep=1
        )
        return DecodeState(cache, mask_BP, positions_BP[:, -1] + 1), logits_BV

    def _decode_step(self, model: torch.nn.Module, state: DecodeState, tok_B: torch.Tensor) -> torch.Tensor:
        """Feed one token per row (``tok_B``) through the chunk's state; the next fp32 logits ``[B, V]``."""
        if state.mask_BP is None:
            state.cache, logits_BV = self._forward(model, tok_B[:, None], state.cache)
            return logits_BV
        ones_B1 = torch.ones((tok_B.shape[0], 1), dtype=state.mask_BP.dtype, device=tok_B.device)
        state.mask_BP = torch.cat([state.mask_BP, ones_B1], 1)
        state.cache, logits_BV = self._forward(
            model,
            tok_B[:, None],
            state.cache,
            attention_mask=state.mask_BP,
            position_ids=state.next_pos_B[:, None],
        )
        state.next_pos_B = state.next_pos_B + 1
        return logits_BV

    def _forward(
        self, model: torch.nn.Module, input_ids: torch.Tensor, cache: Any, **kwargs
    ) -> tuple[Any, torch.Tensor]:
        """One cached forward (``cache`` None: a new one); the cache after it and the fp32 logits ``[B, V]``
        of the last position."""
        if cache is not None:
            kwargs[self._cache_kw] = cache
        out = model(input_ids=input_ids, use_cache=True, **kwargs)
        return getattr(out, self._cache_kw), out.logits[:, -1].float()


def prompt_positions(mask_BP: torch.Tensor) -> torch.Tensor:
    """Position ids of left-padded prompts: each row counts from 0 at its first token (padding gets 0)."""
    return (mask_BP.cumsum(-1) - 1).clamp(min=0)


def left_pad(prompts: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids_BP`` and ``mask_BP`` of prompts left-padded to the longest one."""
    B = len(prompts)
    P = max(len(p) for p in prompts)
    input_ids_BP = torch.full((B, P), pad_id, dtype=torch.long)
    mask_BP = torch.zeros((B, P), dtype=torch.long)
    for i, p in enumerate(prompts):
        input_ids_BP[i, P - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask_BP[i, P - len(p) :] = 1
    return input_ids_BP.to(device), mask_BP.to(device)


class StepSampler:
    """The per-step sampling of one chunk, shared by the transformers backends.

    ``step(logits_BV)`` draws one token per row from the fp32 logits (exponential race, see ``_sample``),
    records its log-probability under ``log_softmax(logits / temperature)`` (before filtering), puts
    the pad id in rows that already ended, and returns True when every row has ended. ``rows()`` cuts
    each row after its first stop id.
    """

    def __init__(self, params, generator, eos_token_ids, pad_token_id, B, logits_BV, device) -> None:
        self.params = params
        self.generator = generator
        self.eos_token_ids = eos_token_ids
        T = params.max_new_tokens
        self.tokens_BT = torch.full((B, T), pad_token_id, dtype=torch.long, device=device)
        self.logps_BT = torch.zeros((B, T), dtype=torch.float32, device=device)
        self.finished_B = torch.zeros(B, dtype=torch.bool, device=device)
        self.is_eos_V = torch.zeros(logits_BV.shape[-1], dtype=torch.bool, device=device)
        self.is_eos_V[[e for e in eos_token_ids if 0 <= e < self.is_eos_V.numel()]] = True
        self.pad_B = torch.full((B,), pad_token_id, dtype=torch.long, device=device)
        self.unfiltered = params.top_k == 0 and params.top_p >= 1.0
        self.steps = 0
        self.last_tokens_B = self.pad_B

    def step(self, logits_BV: torch.Tensor) -> bool:
        t = self.steps
        logp_BV = torch.log_softmax(logits_BV / self.params.temperature, dim=-1)
        if self.unfiltered:
            probs_BV = logp_BV.exp()
        else:
            probs_BV = torch.softmax(filter_logits(logp_BV, self.params.top_k, self.params.top_p), dim=-1)
        tok_B = _sample(probs_BV, self.generator)
        tok_B = torch.where(self.finished_B, self.pad_B, tok_B)
        self.tokens_BT[:, t] = tok_B
        self.logps_BT[:, t] = logp_BV.gather(-1, tok_B[:, None]).squeeze(1)
        self.finished_B |= self.is_eos_V[tok_B]
        self.steps = t + 1
        self.last_tokens_B = tok_B
        return bool(self.finished_B.all())

    def rows(self) -> list[tuple[list[int], list[float], bool]]:
        tokens = self.tokens_BT[:, : self.steps].tolist()
        logps = self.logps_BT[:, : self.steps].tolist()
        rows = []
        eos_set = set(self.eos_token_ids)
        for ids, lps in zip(tokens, logps, strict=True):
            end = next((j + 1 for j, tok in enumerate(ids) if tok in eos_set), None)
            if end is None:
                rows.append((ids, lps, False))
            else:
                rows.append((ids[:end], lps[:end], True))
        return rows


def _sample(probs_BV: torch.Tensor, generator: torch.Generator | list[torch.Generator]) -> torch.Tensor:
    """One token per row from ``probs_BV`` by the exponential race: argmax(p / E), E ~ Exp(1) i.i.d.

    Distributed exactly as ``torch.multinomial(probs, 1)`` (and the argmax of p / E is the same as
    Gumbel-max on log p) but several times cheaper per step on CPU. Zero-probability tokens never win.
    A list of generators (one per row) draws each row's noise from its own stream.
    """
    if isinstance(generator, torch.Generator):
        noise_BV = torch.empty_like(probs_BV).exponential_(generator=generator)
    else:
        noise_BV = torch.stack([torch.empty_like(probs_BV[0]).exponential_(generator=g) for g in generator])
    return (probs_BV / noise_BV).argmax(dim=-1)


def _row_generator(seed: int, index: int, device) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, index))
    return gen


def _cache_keyword(model: torch.nn.Module) -> str:
    """Name of the KV-cache argument and output field: 'cache' (transformers >= 5.2x) or 'past_key_values'."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
