"""Test fixtures around the tiny model: a verifiable toy task for learner tests, the data-parallel
check and the benchmark.

The tiny model family itself is product code (``model.name_or_path: tiny``) and lives in
``pasodoble.tiny``; its names are re-exported here for the tests that import them from this module.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerFast

from pasodoble.tiny import (
    CHATML_TEMPLATE,
    ENDOFTEXT,
    IM_END,
    IM_START,
    SPECIAL_TOKENS,
    TINY_CORPUS,
    build_tiny_model,
    build_tiny_tokenizer,
    chatml_fast_tokenizer,
    seeded_qwen3,
    tiny_model_config,
)

__all__ = [
    "CHATML_TEMPLATE",
    "ENDOFTEXT",
    "IM_END",
    "IM_START",
    "SPECIAL_TOKENS",
    "TINY_CORPUS",
    "build_tiny_model",
    "build_tiny_tokenizer",
    "chatml_fast_tokenizer",
    "digit_reward",
    "seeded_qwen3",
    "tiny_grpo_step",
    "tiny_model_config",
    "tiny_task_prompts",
]


def tiny_task_prompts(tokenizer: PreTrainedTokenizerFast, count: int = 4) -> list[list[int]]:
    """``count`` chat-templated arithmetic prompts as token ids (what the rollout backend takes)."""
    pairs = [(3, 4), (1, 2), (10, 5), (7, 7), (2, 9), (6, 1), (8, 8), (4, 5)]
    prompts = []
    for i in range(count):
        a, b = pairs[i % len(pairs)]
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": f"What is {a} + {b}?"}], tokenize=False, add_generation_prompt=True
        )
        prompts.append(tokenizer(text, add_special_tokens=False).input_ids)
    return prompts


def digit_reward(
    tokenizer: PreTrainedTokenizerFast, completion_ids: list[int], digit: str = "7", within: int = 5
) -> float:
    """1.0 if the decoded first ``within`` completion tokens contain ``digit``, else 0.0."""
    return float(digit in tokenizer.decode(completion_ids[:within], skip_special_tokens=True))


def tiny_grpo_step(
    learner, backend, prompts: list[list[int]], params, reward_fn
) -> tuple[float, dict[str, float]]:
    """One full GRPO step on the toy task: generate ``params.n`` per prompt, score, advantages, update.

    Every process generates the whole batch (same seed, same weights) and trains on its shard, so a
    data-parallel run sees exactly the batch of a single-process run. Returns (mean reward, metrics).
    """
    from pasodoble.grpo import group_advantages
    from pasodoble.learner import TrainSample

    groups = backend.generate(prompts, params)
    completions = [c for group in groups for c in group]
    rewards = [reward_fn(c.completion_ids) for c in completions]
    adv = group_advantages(rewards, params.n, learner.grpo_cfg.advantage_norm, learner.grpo_cfg.advantage_eps)
    samples = [
        TrainSample(c.prompt_ids, c.completion_ids, float(a), c.logprobs, c.truncated)
        for c, a in zip(completions, adv.tolist(), strict=True)
    ]
    metrics = learner.update(learner.shard(samples))
    backend.sync_weights(learner.unwrapped_model)
    return sum(rewards) / len(rewards), metrics
