"""The Learner on the tiny model: learning a verifiable reward, determinism, accumulation, resume, saving."""

from __future__ import annotations

import copy
import time

import pytest
import torch
from transformers import AutoModelForCausalLM

from pasodoble.config import GRPOConfig, ModelConfig, RoleConfig
from pasodoble.errors import UserError
from pasodoble.learner import Learner, TrainSample
from pasodoble.models import load_model_and_tokenizer
from pasodoble.rollout.base import SamplingParams
from pasodoble.rollout.hf import HFBackend
from pasodoble.testing.tiny import build_tiny_model, digit_reward, tiny_grpo_step, tiny_task_prompts

MAX_STEPS = 40


def _learner(model, tok, *, lr=3e-3, mbs=64, loss_type="dr_grpo", steps_per_batch=1, beta=0.0, new_tokens=6):
    role = RoleConfig(learning_rate=lr, micro_batch_size=mbs, steps_per_batch=steps_per_batch)
    grpo = GRPOConfig(loss_type=loss_type, beta=beta)
    return Learner("solver", model, tok, role, grpo, temperature=1.0, max_new_tokens=new_tokens)


def _train(tok, seed: int, steps: int, *, stop_at: float | None = None):
    """GRPO on 'a 7 within the first 5 completion tokens'; returns (learner, rewards, seconds)."""
    learner = _learner(build_tiny_model(tok, seed=seed), tok)
    backend = HFBackend(learner.unwrapped_model, tok)
    prompts = tiny_task_prompts(tok, 4)
    rewards: list[float] = []
    start = time.perf_counter()
    for step in range(steps):
        params = SamplingParams(
            temperature=1.0, max_new_tokens=6, n=8, seed=seed * 10_000 + step, return_logprobs=True
        )
        reward, _ = tiny_grpo_step(learner, backend, prompts, params, lambda ids: digit_reward(tok, ids))
        rewards.append(reward)
        if stop_at is not None and len(rewards) >= 3 and min(rewards[-3:]) >= stop_at:
            break
    return learner, rewards, time.perf_counter() - start


def _params(learner) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in learner.unwrapped_model.state_dict().items()}


def _samples(tok, n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    prompts = tiny_task_prompts(tok, 4)
    out = []
    for i in range(n):
        length = int(torch.randint(1, 9, (1,), generator=g))
        comp = torch.randint(3, len(tok), (length,), generator=g).tolist()
        out.append(TrainSample(prompts[i % 4], comp, float(torch.randn(1, generator=g)), None, length == 8))
    return out


def test_grpo_learns_a_verifiable_reward(tiny_tokenizer, one_thread):
    learner, rewards, seconds = _train(tiny_tokenizer, seed=0, steps=MAX_STEPS, stop_at=0.9)
    print(f"\nreward {rewards[0]:.3f} -> {rewards[-1]:.3f} in {len(rewards)} steps, {seconds:.1f} s")
    assert rewards[0] < 0.5
    assert min(rewards[-3:]) >= 0.9, rewards
    assert seconds < 120


def test_same_seed_same_parameters_other_seed_differs(tiny_tokenizer, one_thread):
    a = _params(_train(tiny_tokenizer, seed=1, steps=3)[0])
    b = _params(_train(tiny_tokenizer, seed=1, steps=3)[0])
    c = _params(_train(tiny_tokenizer, seed=2, steps=3)[0])
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
def test_accumulation_equals_full_batch(tiny_tokenizer, loss_type, one_thread):
    # float64: Adam divides by the gradient RMS, which turns float32 summation-order noise in nearly
    # cancelling gradients into ~lr * 1e-2 parameter differences; float64 isolates the semantics.
    samples = _samples(tiny_tokenizer)
    f64 = torch.float64
    full = _learner(build_tiny_model(tiny_tokenizer, dtype=f64), tiny_tokenizer, mbs=64, loss_type=loss_type)
    accum = _learner(build_tiny_model(tiny_tokenizer, dtype=f64), tiny_tokenizer, mbs=5, loss_type=loss_type)
    m_full, m_acc = full.update(samples), accum.update(samples)
    assert m_full["grad_norm"] == pytest.approx(m_acc["grad_norm"], rel=1e-9)
    assert m_full["loss"] == pytest.approx(m_acc["loss"], abs=1e-7)
    pa, pb = _params(full), _params(accum)
    assert max((pa[k] - pb[k]).abs().max().item() for k in pa) < 1e-9
    assert full.step == accum.step == 1


def test_metrics_and_steps_per_batch(tiny_tokenizer, one_thread):
    learner = _learner(build_tiny_model(tiny_tokenizer), tiny_tokenizer, mbs=4, steps_per_batch=2, beta=0.05)
    samples = _samples(tiny_tokenizer)
    metrics = learner.update(samples)
    assert learner.step == 2 and metrics["optimizer_steps"] == 2
    for key in ("loss", "grad_norm", "lr", "clip_frac", "clip_frac_low", "clip_frac_high", "kl", "ratio_mean",
                "entropy", "tokens", "sequences", "completion_len_mean", "truncated_frac"):  # fmt: skip
        assert key in metrics, key
    assert metrics["sequences"] == 12 and metrics["tokens"] == sum(len(s.completion_ids) for s in samples)
    assert not any("/" in key for key in metrics)


def test_exact_resume(tiny_tokenizer, one_thread):
    batches = [_samples(tiny_tokenizer, seed=s) for s in range(3)]
    a = _learner(build_tiny_model(tiny_tokenizer, seed=0), tiny_tokenizer, mbs=5)
    a.update(batches[0])
    a.update(batches[1])
    state = copy.deepcopy(a.state_dict())
    a.update(batches[2])
    b = _learner(build_tiny_model(tiny_tokenizer, seed=99), tiny_tokenizer, mbs=5)
    b.load_state_dict(state)
    assert b.step == 2
    b.update(batches[2])
    pa, pb = _params(a), _params(b)
    assert all(torch.equal(pa[k], pb[k]) for k in pa)  # bitwise


def test_save_pretrained_round_trip(tiny_tokenizer, tmp_path, one_thread):
    learner = _learner(build_tiny_model(tiny_tokenizer), tiny_tokenizer)
    learner.update(_samples(tiny_tokenizer))
    learner.save_pretrained(tmp_path / "m")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    saved = learner.unwrapped_model.state_dict()
    assert all(torch.equal(v, saved[k]) for k, v in loaded.state_dict().items())
    model, tok = load_model_and_tokenizer(str(tmp_path / "m"), ModelConfig())
    assert tok("What is 37 + 4?").input_ids == tiny_tokenizer("What is 37 + 4?").input_ids
    assert tok.padding_side == "left" and tok.pad_token_id is not None


def test_gradient_checkpointing_same_update(tiny_tokenizer, one_thread):
    samples = _samples(tiny_tokenizer)
    plain = _learner(build_tiny_model(tiny_tokenizer), tiny_tokenizer)
    role = RoleConfig(learning_rate=3e-3, micro_batch_size=64)
    ckpt = Learner("solver", build_tiny_model(tiny_tokenizer), tiny_tokenizer, role, GRPOConfig(),
                   temperature=1.0, max_new_tokens=6, gradient_checkpointing=True)  # fmt: skip
    assert plain.update(samples)["grad_norm"] == pytest.approx(ckpt.update(samples)["grad_norm"], rel=1e-5)


def test_load_model_and_tokenizer(tmp_path):
    m1, tok = load_model_and_tokenizer("tiny", ModelConfig(), seed=3)
    m2, _ = load_model_and_tokenizer("tiny", ModelConfig(), seed=3)
    assert all(
        torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values(), strict=True)
    )
    assert tok.pad_token is not None and tok.padding_side == "left"
    missing = tmp_path / "nowhere"
    with pytest.raises(UserError, match=str(missing)):
        load_model_and_tokenizer(str(missing), ModelConfig())


def test_bfloat16_model_trains_and_samples(tiny_tokenizer, one_thread):
    model, tok = load_model_and_tokenizer("tiny", ModelConfig(dtype="bfloat16"), seed=0)
    assert next(model.parameters()).dtype == torch.bfloat16
    learner = _learner(model, tok)
    backend = HFBackend(learner.unwrapped_model, tok)
    params = SamplingParams(temperature=1.0, max_new_tokens=6, n=4, seed=0, return_logprobs=True)
    reward, metrics = tiny_grpo_step(
        learner, backend, tiny_task_prompts(tok, 2), params, lambda ids: digit_reward(tok, ids)
    )
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert 0.0 <= reward <= 1.0 and learner.step == 1
