"""The vLLM backend without a GPU: request building, output conversion, weight sync and the HTTP engine
protocol against a fake engine; the real-engine test runs only where vllm and CUDA are present."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from pasodoble.config import load_config
from pasodoble.errors import UserError
from pasodoble.rollout.base import SamplingParams
from pasodoble.rollout.vllm import RemoteEngine, VLLMBackend, make_server


class FakeEngine:
    """Echo engine: completion = [seed % 7 + 3, eos] or max_tokens copies of 5 (finish 'length')."""

    def __init__(self, eos: int, delay_s: float = 0.0, fail: bool = False) -> None:
        self.eos, self.delay_s, self.fail = eos, delay_s, fail
        self.requests: list[dict] = []
        self.weights: dict[str, torch.Tensor] = {}
        self.resets = self.sleeps = self.wakes = 0

    def generate(self, requests):
        if self.fail:
            raise RuntimeError("engine exploded")
        time.sleep(self.delay_s)
        self.requests.extend(requests)
        out = []
        for r in requests:
            s = r["sampling"]
            group = []
            for j in range(s["n"]):
                if s["max_tokens"] <= 2:
                    ids, reason = [5] * s["max_tokens"], "length"
                else:
                    ids, reason = [(s["seed"] + j) % 7 + 3, self.eos], "stop"
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
        for name, t in weights:
            self.weights[name] = t.clone()

    def reset_prefix_cache(self):
        self.resets += 1

    def sleep(self):
        self.sleeps += 1

    def wake_up(self):
        self.wakes += 1


@pytest.fixture
def server():
    started = []

    def start(engine):
        srv = make_server(engine, "127.0.0.1", 0)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        started.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield start
    for srv in started:
        srv.shutdown()
        srv.server_close()


def test_generate_converts_outputs(tiny_model, tiny_tokenizer):
    eos = tiny_tokenizer.eos_token_id
    engine = FakeEngine(eos)
    backend = VLLMBackend(tiny_model, tiny_tokenizer, engine=engine, role="solver")
    prompts = [[1, 2, 3], [1, 2, 3], [4]]
    out = backend.generate(
        prompts, SamplingParams(n=2, temperature=0.6, max_new_tokens=8, return_logprobs=True)
    )
    assert [len(g) for g in out] == [2, 2, 2]
    c = out[0][0]
    assert c.prompt_ids == [1, 2, 3] and c.completion_ids[-1] == eos and c.finish_reason == "eos"
    assert c.logprobs == [-0.5, -0.5]
    seeds = [r["sampling"]["seed"] for r in engine.requests]
    assert len(set(seeds)) == 3  # repeated prompts get their own seeds
    assert eos in engine.requests[0]["sampling"]["stop_token_ids"]
    assert engine.requests[0]["prompt_token_ids"] == [1, 2, 3]  # token ids in, never text
    assert engine.sleeps == 1 and engine.wakes == 1  # colocated default: asleep while learners train
    short = backend.generate([[1]], SamplingParams(max_new_tokens=2))
    assert short[0][0].finish_reason == "length" and short[0][0].logprobs is None


def test_colocated_sync_weights_pushes_every_tensor(tiny_model, tiny_tokenizer):
    engine = FakeEngine(tiny_tokenizer.eos_token_id)
    backend = VLLMBackend(tiny_model, tiny_tokenizer, engine=engine)
    with torch.no_grad():
        next(tiny_model.parameters()).add_(1.0)
    backend.sync_weights(tiny_model)
    state = tiny_model.state_dict()
    assert set(engine.weights) == set(state)
    assert all(torch.equal(engine.weights[k], v) for k, v in state.items())
    assert engine.resets == 1


def test_server_protocol_roundtrip_and_weight_buckets(server, tiny_model, tiny_tokenizer):
    fake = FakeEngine(tiny_tokenizer.eos_token_id)
    url = server(fake)
    remote = RemoteEngine(url, connect_timeout_s=5, bucket_bytes=200_000)  # forces several buckets
    cfg = load_config(None, ["vllm.mode=server", f"vllm.solver_url={url}"])
    backend = VLLMBackend(tiny_model, tiny_tokenizer, engine=remote, role="solver", config=cfg)
    out = backend.generate([[1, 2], [3]], SamplingParams(n=3, max_new_tokens=8, return_logprobs=True))
    assert [len(g) for g in out] == [3, 3] and out[1][2].completion_ids[-1] == tiny_tokenizer.eos_token_id
    assert fake.sleeps == 0  # a server engine keeps its GPUs
    backend.sync_weights(tiny_model)
    state = tiny_model.state_dict()
    assert set(fake.weights) == set(state)
    assert all(torch.equal(fake.weights[k], v) for k, v in state.items())
    assert fake.resets == 1


def test_server_batches_concurrent_requests(server, tiny_tokenizer):
    fake = FakeEngine(tiny_tokenizer.eos_token_id)
    calls = []
    inner = fake.generate
    fake.generate = lambda reqs: calls.append(len(reqs)) or inner(reqs)
    url = server(fake)
    remote = RemoteEngine(url, connect_timeout_s=5)
    req = {
        "prompt_token_ids": [1],
        "sampling": {
            "n": 1,
            "temperature": 1.0,
            "top_p": 1.0,
            "top_k": 0,
            "max_tokens": 4,
            "seed": 0,
            "logprobs": False,
            "stop_token_ids": [2],
        },
    }
    threads = [threading.Thread(target=remote.generate, args=([req, req],)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sum(calls) == 8 and len(calls) < 4  # requests arriving together share engine calls


def test_remote_calls_time_out_and_fail_loudly(server, tiny_tokenizer):
    slow = RemoteEngine(server(FakeEngine(2, delay_s=3.0)), connect_timeout_s=5, request_timeout_s=0.5)
    req = {
        "prompt_token_ids": [1],
        "sampling": {
            "n": 1,
            "temperature": 1.0,
            "top_p": 1.0,
            "top_k": 0,
            "max_tokens": 4,
            "seed": 0,
            "logprobs": False,
            "stop_token_ids": [2],
        },
    }
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="failed after at most"):
        slow.generate([req])
    assert time.monotonic() - t0 < 2.5
    broken = RemoteEngine(server(FakeEngine(2, fail=True)), connect_timeout_s=5)
    with pytest.raises(RuntimeError, match="HTTP 500.*engine exploded"):
        broken.generate([req])


def test_unreachable_server_is_a_user_error():
    with pytest.raises(UserError, match="did not answer /health"):
        RemoteEngine("http://127.0.0.1:9", connect_timeout_s=0.3)


def test_missing_vllm_is_a_user_error(tiny_model, tiny_tokenizer):
    try:
        import vllm  # noqa: F401

        pytest.skip("vllm is installed")
    except ImportError:
        pass
    from pasodoble.rollout import make_backend

    with pytest.raises(UserError, match="install the vllm extra"):
        make_backend("vllm", tiny_model, tiny_tokenizer, role="proposer", config=load_config(None))


def test_real_vllm_engine_generates_and_syncs(tiny_model, tiny_tokenizer, tmp_path):
    pytest.importorskip("vllm")
    if not torch.cuda.is_available():
        pytest.skip("vLLM training paths need a CUDA GPU")
    cfg = load_config(
        None,
        [
            "vllm.gpu_memory_utilization=0.2",
            "vllm.enforce_eager=true",
            "rollout.max_prompt_tokens=64",
            "rollout.max_new_tokens=16",
        ],
    )
    backend = VLLMBackend(tiny_model, tiny_tokenizer, role="proposer", config=cfg)
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=16, seed=3, return_logprobs=True)
    first = backend.generate([[1, 5, 6]], params)
    assert len(first[0]) == 2 and len(first[0][0].logprobs) == len(first[0][0].completion_ids)

    # The weight push: greedy outputs after an update change exactly as the transformers backend's do.
    from pasodoble.rollout.hf import HFBackend

    hf = HFBackend(tiny_model, tiny_tokenizer)
    greedy = SamplingParams(n=1, temperature=1.0, top_k=1, max_new_tokens=12, seed=0)
    prompts = [[1, 5, 6], [1, 7, 8, 9], [1, 10]]

    def ids(b):
        return [group[0].completion_ids for group in b.generate(prompts, greedy)]

    before = ids(backend)
    assert before == ids(hf)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in tiny_model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.5)
    backend.sync_weights(tiny_model)
    hf.sync_weights(tiny_model)
    after = ids(backend)
    assert after == ids(hf)
    assert after != before
