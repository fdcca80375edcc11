"""The transformers rollout backend: determinism, token-id bookkeeping, and learner-matching logprobs."""

from __future__ import annotations

import pytest
import torch

from pasodoble.config import GRPOConfig, RoleConfig
from pasodoble.learner import Learner, TrainSample
from pasodoble.rollout import RolloutBackend, SamplingParams
from pasodoble.rollout.hf import HFBackend, filter_logits
from pasodoble.testing.tiny import tiny_task_prompts


def _prompts(tok):
    # Different lengths, so the batch is left-padded.
    return tiny_task_prompts(tok, 3) + [tok("Compute 12 * 5. We get", add_special_tokens=False).input_ids]


def _ids(groups):
    return [[c.completion_ids for c in g] for g in groups]


def test_backend_satisfies_protocol(tiny_model, tiny_tokenizer):
    assert isinstance(HFBackend(tiny_model, tiny_tokenizer), RolloutBackend)


def test_deterministic_per_seed_and_global_rng_untouched(tiny_model, tiny_tokenizer, one_thread):
    backend = HFBackend(tiny_model, tiny_tokenizer, generation_batch_size=5)
    params = SamplingParams(temperature=0.8, max_new_tokens=12, n=3, seed=7)
    rng_before = torch.get_rng_state()
    first = backend.generate(_prompts(tiny_tokenizer), params)
    assert torch.equal(torch.get_rng_state(), rng_before)
    second = backend.generate(_prompts(tiny_tokenizer), params)
    assert _ids(first) == _ids(second)
    other = backend.generate(
        _prompts(tiny_tokenizer), SamplingParams(temperature=0.8, max_new_tokens=12, n=3, seed=8)
    )
    assert _ids(first) != _ids(other)
    assert [len(g) for g in first] == [3, 3, 3, 3]
    assert all(c.prompt_ids == p for g, p in zip(first, _prompts(tiny_tokenizer), strict=True) for c in g)
    assert tiny_model.training  # the training flag is restored after generation


def test_eos_kept_and_nothing_after_it(tiny_model, tiny_tokenizer, one_thread):
    # Make a third of the vocabulary "EOS" so that many completions stop early.
    eos = list(range(0, len(tiny_tokenizer), 3))
    backend = HFBackend(tiny_model, tiny_tokenizer, eos_token_ids=eos)
    groups = backend.generate(
        _prompts(tiny_tokenizer), SamplingParams(max_new_tokens=8, n=4, seed=0, return_logprobs=True)
    )
    reasons = set()
    for c in (c for g in groups for c in g):
        reasons.add(c.finish_reason)
        assert len(c.logprobs) == len(c.completion_ids) >= 1
        inner = c.completion_ids[:-1]
        assert not any(t in eos for t in inner)
        if c.finish_reason == "eos":
            assert c.completion_ids[-1] in eos and not c.truncated
        else:
            assert len(c.completion_ids) == 8 and c.completion_ids[-1] not in eos and c.truncated
        assert c.text == tiny_tokenizer.decode(c.completion_ids, skip_special_tokens=True)
    assert reasons == {"eos", "length"}


def test_sampling_logprobs_match_learner_logprobs(tiny_model, tiny_tokenizer, one_thread):
    backend = HFBackend(tiny_model, tiny_tokenizer, generation_batch_size=4)
    params = SamplingParams(temperature=0.7, max_new_tokens=16, n=3, seed=3, return_logprobs=True)
    groups = backend.generate(_prompts(tiny_tokenizer), params)
    learner = Learner(
        "solver", tiny_model, tiny_tokenizer, RoleConfig(micro_batch_size=5), GRPOConfig(),
        temperature=0.7, max_new_tokens=16,
    )  # fmt: skip
    comps = [c for g in groups for c in g]
    samples = [TrainSample(c.prompt_ids, c.completion_ids, 0.0) for c in comps]
    learner_lps = learner.logprobs(samples)
    diff = max(
        abs(a - b)
        for c, lps in zip(comps, learner_lps, strict=True)
        for a, b in zip(c.logprobs, lps, strict=True)
    )
    assert diff < 1e-4, diff


def test_top_k_one_is_greedy(tiny_model, tiny_tokenizer, one_thread):
    backend = HFBackend(tiny_model, tiny_tokenizer)
    prompt = _prompts(tiny_tokenizer)[:1]
    a = backend.generate(prompt, SamplingParams(top_k=1, max_new_tokens=6, n=2, seed=1))
    b = backend.generate(prompt, SamplingParams(top_k=1, max_new_tokens=6, n=2, seed=2))
    assert _ids(a) == _ids(b) and a[0][0].completion_ids == a[0][1].completion_ids
    with torch.no_grad():
        ids = torch.tensor([prompt[0]])
        first = tiny_model(input_ids=ids).logits[0, -1].argmax().item()
    assert a[0][0].completion_ids[0] == first


def test_filter_logits_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_logits(logits, 2, 1.0)).tolist() == [[False, False, True, True]]
    # Nucleus 0.7: 0.5 alone is below 0.7, 0.5 + 0.3 reaches it -> keep the first two.
    assert torch.isinf(filter_logits(logits, 0, 0.7)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(logits, 0, 0.1)).tolist() == [[False, True, True, True]]


def test_sampling_params_validation():
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=0.0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0.0)


def test_per_prompt_seeds_make_samples_independent_of_batch_company(tiny_model, tiny_tokenizer, one_thread):
    # pasodoble eval batches problems, one seed per problem: a problem's samples must not depend on
    # which other problems share the call, or on the chunking of the batch.
    prompts = tiny_task_prompts(tiny_tokenizer, 4)
    alone = HFBackend(tiny_model, tiny_tokenizer, generation_batch_size=64)
    params = dict(temperature=1.0, max_new_tokens=12, n=3)
    solo = alone.generate([prompts[2]], SamplingParams(**params, seeds=(77,)))[0]
    batched = alone.generate(prompts, SamplingParams(**params, seeds=(5, 6, 77, 8)))[2]
    chunked = HFBackend(tiny_model, tiny_tokenizer, generation_batch_size=2).generate(
        prompts, SamplingParams(**params, seeds=(5, 6, 77, 8))
    )[2]
    assert [c.completion_ids for c in solo] == [c.completion_ids for c in batched]
    assert [c.completion_ids for c in solo] == [c.completion_ids for c in chunked]
    # the n samples of one prompt differ from each other, and another seed gives other samples
    assert len({tuple(c.completion_ids) for c in solo}) > 1
    other = alone.generate([prompts[2]], SamplingParams(**params, seeds=(78,)))[0]
    assert [c.completion_ids for c in other] != [c.completion_ids for c in solo]
    with pytest.raises(ValueError, match="seeds"):
        alone.generate(prompts, SamplingParams(**params, seeds=(1,)))


@pytest.fixture
def base_style_tokenizer():
    """The tiny ChatML tokenizer with the EOS of a base model (Qwen3-*-Base, Qwen2.5): <|endoftext|>."""
    from pasodoble.testing.tiny import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    tok.eos_token = "<|endoftext|>"
    return tok


@pytest.mark.parametrize("backend_name", ["hf", "hf_batched"])
def test_base_model_stops_at_the_chat_end_of_turn(tiny_model, base_style_tokenizer, backend_name, one_thread):
    from pasodoble.rollout import make_backend
    from pasodoble.rollout.base import end_of_turn_ids

    tok = base_style_tokenizer
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.eos_token_id == 0 and im_end == 2 and end_of_turn_ids(tok) == [2]
    tiny_model.generation_config.eos_token_id = tok.eos_token_id
    backend = make_backend(backend_name, tiny_model, tok)
    assert backend.eos_token_ids == [0, 2]  # the EOS and the template's end of turn
    # Force <|im_end|> as the third token: generation must stop there, with the token kept.
    calls = []

    def favour_im_end(_module, _inputs, logits):
        calls.append(1)
        if len(calls) == 3:
            logits = logits.clone()
            logits[..., im_end] += 100.0
        return logits

    handle = tiny_model.lm_head.register_forward_hook(favour_im_end)
    try:
        out = backend.generate([[1, 5, 6, 7]], SamplingParams(max_new_tokens=20, seed=0))[0][0]
    finally:
        handle.remove()
    assert len(out.completion_ids) == 3 and out.completion_ids[-1] == im_end
    assert out.finish_reason == "eos" and not out.truncated


def test_end_of_turn_ids_without_template_or_special_token(tiny_tokenizer):
    from pasodoble.rollout.base import end_of_turn_ids

    assert end_of_turn_ids(tiny_tokenizer) == [2]

    class NoTemplate:
        chat_template = None

    assert end_of_turn_ids(NoTemplate()) == []


@pytest.mark.parametrize("dtype", [torch.bfloat16])
def test_compute_dtype_runs_the_decode_under_autocast(tiny_model, tiny_tokenizer, dtype, one_thread):
    seen = []
    handle = tiny_model.model.layers[0].mlp.down_proj.register_forward_hook(
        lambda _m, _i, out: seen.append(out.dtype)
    )
    try:
        HFBackend(tiny_model, tiny_tokenizer, compute_dtype=dtype).generate(
            [[1, 5, 6]], SamplingParams(max_new_tokens=3)
        )
        assert set(seen) == {dtype}
        seen.clear()
        HFBackend(tiny_model, tiny_tokenizer).generate([[1, 5, 6]], SamplingParams(max_new_tokens=3))
        assert set(seen) == {torch.float32}
    finally:
        handle.remove()
    assert next(tiny_model.parameters()).dtype == torch.float32  # the master weights are untouched
