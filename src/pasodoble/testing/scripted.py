"""A scripted rollout backend for engine tests and the GPU check: controlled text, real token ids, real
training.

An untrained tiny model almost never writes a valid ``<problem>``, so every dual-play step would be
skipped. This backend writes addition problems (Proposer; its answer is wrong 20% of the time, and
1 proposal in 8 is unparseable) and boxed answers (Solver; right with a probability that varies per
question). The completions are tokenized with the run's tokenizer, so the learners train on them as
on sampled text. Deterministic given ``SamplingParams.seed``.
"""

from __future__ import annotations

import random
import re

from pasodoble.rollout.base import Completion, GenerationBackend, SamplingParams

_PROBLEM = re.compile(r"What is (\d+) \+ (\d+)\?")


class ScriptedBackend(GenerationBackend):
    def __init__(self, role: str, tokenizer) -> None:
        self.role = role
        self.tokenizer = tokenizer
        self.syncs = 0

    def sync_weights(self, model) -> None:
        self.syncs += 1

    def _complete(self, prompt: list[int], text: str, params: SamplingParams) -> Completion:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
        finish = "eos"
        if len(ids) > params.max_new_tokens:
            ids, finish = ids[: params.max_new_tokens], "length"
        return Completion(list(prompt), ids, text, finish)

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        rng = random.Random(params.seed)
        out = []
        for prompt in prompts:
            group = []
            for _ in range(params.n):
                if self.role == "proposer":
                    a, b = rng.randint(1, 40), rng.randint(1, 40)
                    if rng.random() < 0.125:
                        text = "I could not think of a problem."
                    else:
                        answer = a + b if rng.random() < 0.8 else a + b + 1
                        text = f"<problem>What is {a} + {b}?</problem> We add. \\boxed{{{answer}}}"
                else:
                    m = _PROBLEM.search(self.tokenizer.decode(prompt))
                    a, b = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
                    skill = ((a * 7 + b) % 5) / 5 + 0.1  # per-question chance of a right answer
                    answer = a + b if rng.random() < skill else a + b + rng.randint(1, 3)
                    text = f"{a} + {b} = {answer}. \\boxed{{{answer}}}"
                group.append(self._complete(prompt, text, params))
            out.append(group)
        return out


def scripted_factory(role: str, model, tokenizer) -> ScriptedBackend:
    return ScriptedBackend(role, tokenizer)
