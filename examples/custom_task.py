"""A task of your own: the built-in short-answer QA task with a stricter validity rule, plugged in by path.

    python examples/custom_task.py

``task.name`` names a Task (docs/tasks.md): two prompts, proposal parsing, the validity rule, the answer
format and the grader. This one reuses ``pasodoble.tasks.qa.QATask`` and refuses answers longer than
three words. It is checked on hand-written Proposer outputs, then trained for 2 steps on the tiny model
with a scripted generator (an untrained tiny model writes no valid question; the generator writes
quiz questions with real token ids, so the learners make real updates). About 10-20 s on 2 CPU cores.
"""

from __future__ import annotations

import random
import sys
import tempfile
from pathlib import Path

import pasodoble as pd
from pasodoble.rollout.base import Completion, GenerationBackend
from pasodoble.tasks.qa import QATask
from pasodoble.types import Question, Validity

HERE = Path(__file__).resolve().parent


class ShortAnswerQA(QATask):
    """QA whose answers are at most three words (a longer one is invalid: 'answer_too_long')."""

    name = "short-answer-qa"

    def question_validity(self, question, *, leak_check="token"):
        if isinstance(question, Question) and len(question.answer.split()) > 3:
            return Validity(False, "answer_too_long")
        return super().question_validity(question, leak_check=leak_check)


class QuizWriter(GenerationBackend):
    """A scripted generator: the Proposer asks for capitals, the Solver answers right about half the time."""

    CAPITALS = [("France", "Paris"), ("Italy", "Rome"), ("Japan", "Tokyo"), ("Kenya", "Nairobi")]

    def __init__(self, role, tokenizer):
        self.role, self.tokenizer = role, tokenizer

    def sync_weights(self, model):
        pass

    def generate(self, prompts, params):
        rng = random.Random(params.seed)
        out = []
        for prompt in prompts:
            group = []
            for _ in range(params.n):
                if self.role == "proposer":
                    country, city = rng.choice(self.CAPITALS)
                    text = f"<question>What is the capital of {country}?</question><answer>{city}</answer>"
                else:
                    asked = self.tokenizer.decode(prompt)
                    city = next((c for k, c in self.CAPITALS if k in asked), "Oslo")
                    text = f"Answer: {city if rng.random() < 0.5 else 'Berlin'}"
                ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] + [
                    self.tokenizer.eos_token_id
                ]
                group.append(Completion(list(prompt), ids[: params.max_new_tokens], text, "eos"))
            out.append(group)
        return out


def main() -> None:
    sys.path.insert(0, str(HERE))  # so that "custom_task:ShortAnswerQA" imports this file
    task = ShortAnswerQA()
    ok = task.parse_proposal("<question>Capital of Peru?</question><answer>Lima</answer>")
    long = task.parse_proposal("<question>Who wrote it?</question><answer>a team of four people</answer>")
    assert task.question_validity(ok) == (True, None)
    assert task.question_validity(long) == (False, "answer_too_long")

    from pasodoble.train import run_training  # a custom generator is a training-level hook

    with tempfile.TemporaryDirectory() as tmp:
        cfg = pd.load_config(
            HERE.parent / "configs" / "tiny.yaml",
            overrides=[
                "task.name=custom_task:ShortAnswerQA",
                "run.max_steps=2",
                "run.progress=false",
                "grader.workers=0",
                f"run.out_dir={Path(tmp) / 'run'}",
            ],
        )
        summary = run_training(cfg, backend_factory=lambda role, model, tok: QuizWriter(role, tok))
        print(summary)
        assert summary["updates"] > 0


if __name__ == "__main__":
    main()
