"""The static-cache transformers backend (``rollout.backend=hf_batched``) holds HFBackend's contract on CPU:
the same completion ids, per-token log-probabilities, stop handling and truncation flags for the same
seeds. (CUDA graphs, its speed-up, need a GPU: ``python -m pasodoble.rollout.bench``.)"""

from __future__ import annotations

import pytest
import torch

from pasodoble.rollout import RolloutBackend, SamplingParams, make_backend
from pasodoble.rollout.hf import HFBackend
from pasodoble.rollout.hf_batched import _REPLICAS, HFBatchedBackend, StaticKV, release_replicas
from pasodoble.testing.tiny import build_tiny_model, tiny_task_prompts


def _prompts(tok):
    # three lengths, so chunks are left-padded; the last two prompts are equal (an unpadded chunk of 2)
    same = tok("Compute 12 * 5. We get", add_special_tokens=False).input_ids
    return tiny_task_prompts(tok, 3) + [same, same]


def _flat(groups):
    return [c for g in groups for c in g]


@pytest.mark.parametrize("chunk", [2, 5, 64])
@pytest.mark.parametrize("per_prompt_seeds", [False, True])
def test_same_ids_and_logprobs_as_hf(tiny_model, tiny_tokenizer, chunk, per_prompt_seeds, one_thread):
    prompts = _prompts(tiny_tokenizer)
    params = SamplingParams(
        temperature=0.8,
        max_new_tokens=14,
        n=2,
        seed=11,
        return_logprobs=True,
        seeds=tuple(range(40, 40 + len(prompts))) if per_prompt_seeds else None,
    )
    want = HFBackend(tiny_model, tiny_tokenizer, generation_batch_size=chunk).generate(prompts, params)
    # window_bucket 4 makes the attention window grow through several buckets within 14 steps
    fast = HFBatchedBackend(tiny_model, tiny_tokenizer, generation_batch_size=chunk, window_bucket=4)
    got = fast.generate(prompts, params)
    assert [c.completion_ids for c in _flat(got)] == [c.completion_ids for c in _flat(want)]
    assert [c.finish_reason for c in _flat(got)] == [c.finish_reason for c in _flat(want)]
    assert [c.prompt_ids for c in _flat(got)] == [c.prompt_ids for c in _flat(want)]
    diff = max(
        abs(a - b)
        for x, y in zip(_flat(got), _flat(want), strict=True)
        for a, b in zip(x.logprobs, y.logprobs, strict=True)
    )
    assert diff < 1e-5, diff
    assert fast.last_stats["decode_steps"] >= 14 and fast.last_stats["graphs"] == 0  # no CUDA here


def test_stops_at_first_eos_and_flags_truncation_like_hf(tiny_model, tiny_tokenizer, one_thread):
    eos = list(range(0, len(tiny_tokenizer), 3))  # a third of the vocabulary ends a completion
    params = SamplingParams(max_new_tokens=8, n=4, seed=0, return_logprobs=True)
    want = HFBackend(tiny_model, tiny_tokenizer, eos_token_ids=eos).generate(_prompts(tiny_tokenizer), params)
    got = HFBatchedBackend(tiny_model, tiny_tokenizer, eos_token_ids=eos, window_bucket=3).generate(
        _prompts(tiny_tokenizer), params
    )
    reasons = set()
    for c, w in zip(_flat(got), _flat(want), strict=True):
        assert c.completion_ids == w.completion_ids and c.truncated == w.truncated
        assert len(c.logprobs) == len(c.completion_ids) >= 1
        assert not any(t in eos for t in c.completion_ids[:-1])  # nothing after the first stop id
        if c.finish_reason == "eos":
            assert c.completion_ids[-1] in eos
        else:
            assert len(c.completion_ids) == 8 and c.truncated
        reasons.add(c.finish_reason)
    assert reasons == {"eos", "length"}


def test_deterministic_and_global_rng_untouched(tiny_model, tiny_tokenizer, one_thread):
    backend = HFBatchedBackend(tiny_model, tiny_tokenizer, window_bucket=5)
    assert isinstance(backend, RolloutBackend)
    params = SamplingParams(temperature=1.0, max_new_tokens=10, n=2, seed=3)
    before = torch.get_rng_state()
    first = backend.generate(_prompts(tiny_tokenizer), params)
    assert torch.equal(torch.get_rng_state(), before)
    again = backend.generate(_prompts(tiny_tokenizer), params)
    assert [c.completion_ids for c in _flat(first)] == [c.completion_ids for c in _flat(again)]
    assert tiny_model.training  # restored
    assert backend.generate([], params) == []


def test_static_cache_writes_columns_and_returns_the_window():
    cache = StaticKV(batch_size=2, max_len=6, device=torch.device("cpu"))
    k = torch.arange(2 * 1 * 3 * 2, dtype=torch.float32).view(2, 1, 3, 2)  # [B, heads, 3 tokens, dim]
    cache.window = 4
    keys, values = cache.update(k, -k, 0)
    assert keys.shape == (2, 1, 4, 2) and torch.equal(keys[:, :, :3], k) and torch.equal(values[:, :, :3], -k)
    assert torch.equal(keys[:, :, 3], torch.zeros(2, 1, 2))
    cache.pos.fill_(3)
    one = torch.full((2, 1, 1, 2), 7.0)
    keys, _ = cache.update(one, one, 0)
    assert torch.equal(keys[:, :, 3], torch.full((2, 1, 2), 7.0)) and keys.shape[2] == 4


def test_make_backend_builds_it_and_refuses_other_attention(tiny_model, tiny_tokenizer):
    assert isinstance(make_backend("hf_batched", tiny_model, tiny_tokenizer), HFBatchedBackend)
    tiny_model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="model.attn_implementation=sdpa"):
        HFBatchedBackend(tiny_model, tiny_tokenizer)


def test_one_compute_dtype_replica_serves_both_roles(tiny_tokenizer, one_thread):
    """With replica=True (automatic with CUDA graphs) both roles decode on one bfloat16 copy, refilled from
    the role's float32 weights at each role switch and after each update, and never otherwise."""
    release_replicas()
    proposer = build_tiny_model(tiny_tokenizer, seed=0)
    solver = build_tiny_model(tiny_tokenizer, seed=1)
    kw = dict(compute_dtype=torch.bfloat16, replica=True, window_bucket=4)
    backends = {
        "p": HFBatchedBackend(proposer, tiny_tokenizer, **kw),
        "s": HFBatchedBackend(solver, tiny_tokenizer, **kw),
    }
    params = SamplingParams(max_new_tokens=4, seed=0)
    copies = []

    def holds(model):
        replica = next(iter(_REPLICAS.values())).module
        assert next(replica.parameters()).dtype == torch.bfloat16
        return all(
            torch.equal(replica.state_dict()[k], v.to(torch.bfloat16)) for k, v in model.state_dict().items()
        )

    original = HFBatchedBackend._generation_model

    def counting(self, device):
        before = next(iter(_REPLICAS.values())).holds if _REPLICAS else None
        module = original(self, device)
        copies.append(_REPLICAS and next(iter(_REPLICAS.values())).holds != before)
        return module

    HFBatchedBackend._generation_model = counting
    try:
        backends["p"].generate([[1, 5]], params)
        assert len(_REPLICAS) == 1 and holds(proposer)
        # the copy's time is reported once, for time/weight_sync
        assert backends["p"].pop_sync_seconds() > 0 and backends["p"].pop_sync_seconds() == 0
        backends["p"].generate([[1, 5]], params)  # same role, same weights: no copy
        backends["s"].generate([[1, 5]], params)
        assert len(_REPLICAS) == 1 and holds(solver)
        with torch.no_grad():
            next(solver.parameters()).add_(1.0)
        backends["s"].sync_weights(solver)
        backends["s"].generate([[1, 5]], params)
        assert holds(solver)
        backends["p"].generate([[1, 5]], params)
        assert holds(proposer)
    finally:
        HFBatchedBackend._generation_model = original
        release_replicas()
    assert copies == [True, False, True, True, True]
    assert next(proposer.parameters()).dtype == torch.float32  # masters untouched


class ReplayingGraph:
    """Stands in for a captured CUDA graph on CPU: ``replay`` reruns the captured step and writes into the
    output tensor the capture returned, as a real replay overwrites its static output."""

    def __init__(self, step):
        self.step = step
        self.replays = 0

    def replay(self):
        self.replays += 1
        self.out.copy_(self.step())


def test_graph_replay_bookkeeping_matches_eager_decoding(tiny_model, tiny_tokenizer, monkeypatch, one_thread):
    """The CUDA-graph path of the decode loop (capture per window, replay, static output) with a CPU stand-in
    for the graph: the same tokens and log-probabilities as eager decoding."""
    params = SamplingParams(temperature=0.9, max_new_tokens=12, n=2, seed=4, return_logprobs=True)
    prompts = _prompts(tiny_tokenizer)
    eager = HFBatchedBackend(tiny_model, tiny_tokenizer, window_bucket=4).generate(prompts, params)
    graphs = []

    def capture(self, forward, w, pool, device):
        graph = ReplayingGraph(lambda: forward(w))
        graph.out = forward(w)
        graphs.append(graph)
        return graph, graph.out

    monkeypatch.setattr(HFBatchedBackend, "_graphs_on", lambda self, device: True)
    monkeypatch.setattr(HFBatchedBackend, "_capture", capture)
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: None)
    backend = HFBatchedBackend(tiny_model, tiny_tokenizer, window_bucket=4)
    graphed = backend.generate(prompts, params)
    assert [c.completion_ids for c in _flat(graphed)] == [c.completion_ids for c in _flat(eager)]
    assert [c.logprobs for c in _flat(graphed)] == [c.logprobs for c in _flat(eager)]
    # windows of 4 columns: a graph per window the decode reached, every later step a replay
    assert backend.last_stats["graphs"] == len(graphs) >= 3 and sum(g.replays for g in graphs) >= 8


def test_a_failed_capture_falls_back_to_eager_decoding(tiny_model, tiny_tokenizer, monkeypatch, one_thread):
    params = SamplingParams(temperature=0.9, max_new_tokens=10, n=2, seed=4, return_logprobs=True)
    prompts = _prompts(tiny_tokenizer)
    eager = HFBatchedBackend(tiny_model, tiny_tokenizer, window_bucket=4).generate(prompts, params)

    def no_streams(*a, **k):
        raise RuntimeError("CUDA graphs are not available here")

    monkeypatch.setattr(torch.cuda, "Stream", no_streams)
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: None)
    backend = HFBatchedBackend(tiny_model, tiny_tokenizer, window_bucket=4, cuda_graphs=True)
    monkeypatch.setattr(HFBatchedBackend, "_graphs_on", lambda self, device: self.graph_error is None)
    out = backend.generate(prompts, params)
    assert backend.graph_error == "RuntimeError: CUDA graphs are not available here"
    assert [c.completion_ids for c in _flat(out)] == [c.completion_ids for c in _flat(eager)]
    assert backend.last_stats["graphs"] == 0
