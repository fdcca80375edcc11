"""Memorization analysis: ROUGE-L by hand, EM = 1 for a model trained on the questions, ~0 untrained."""

from __future__ import annotations

import json

import pytest
import torch

from pasodoble.cli import main
from pasodoble.eval.memorization import lcs_length, read_questions, rouge_l_f1
from pasodoble.testing.tiny import build_tiny_model, build_tiny_tokenizer

QUESTIONS = [
    "A farmer has 12 apples and gives away 5. How many apples are left?",
    "Compute the sum of the first 10 positive integers.",
    "What is the remainder when 100 is divided by 7?",
    "The triangle has sides 3, 4 and 5. Find its area.",
    "If x + 3 = 10, what is the value of x?",
]


def test_lcs_and_rouge_hand_values():
    assert lcs_length("ABCBDAB", "BDCABA") == 4  # classic CLRS example: BCBA
    assert lcs_length([], [1, 2]) == 0
    # candidate [1,2,3,4], reference [1,3,5]: LCS = [1,3] = 2, P = 2/4, R = 2/3, F1 = 2*(1/2)(2/3)/(7/6) = 4/7
    assert rouge_l_f1([1, 2, 3, 4], [1, 3, 5]) == pytest.approx(4 / 7)
    assert rouge_l_f1([1, 2, 3], [1, 2, 3]) == 1.0
    assert rouge_l_f1([7, 8], [1, 2]) == 0.0


def test_read_questions(tmp_path):
    path = tmp_path / "rollouts.jsonl"
    lines = [{"problem": "p1"}, {"problem": None}, {"other": 1}, {"problem": "p1"}, {"problem": " p2 "}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert read_questions(path) == ["p1", "p2"]


@pytest.fixture
def one_thread():
    """Tiny models run faster on one thread, and much faster when other jobs share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _train_to_memorize(tokenizer, steps: int = 120):
    """Plain causal-LM loss on the questions (right-padded, padding masked out of the labels)."""
    model = build_tiny_model(tokenizer, seed=0)
    rows = [tokenizer(q, add_special_tokens=False)["input_ids"] for q in QUESTIONS]
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    labels = ids.masked_fill(mask == 0, -100)
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, loss.item()


@pytest.mark.slow
def test_memorized_model_scores_one_untrained_near_zero(tmp_path, one_thread):
    tokenizer = build_tiny_tokenizer()
    qpath = tmp_path / "rollouts.jsonl"
    qpath.write_text(
        "".join(json.dumps({"step": i, "problem": q, "answer": "1"}) + "\n" for i, q in enumerate(QUESTIONS))
    )

    trained, loss = _train_to_memorize(tokenizer)
    assert loss < 0.05
    trained_dir = tmp_path / "trained"
    trained.save_pretrained(trained_dir)
    tokenizer.save_pretrained(trained_dir)
    untrained_dir = tmp_path / "untrained"
    build_tiny_model(tokenizer, seed=1).save_pretrained(untrained_dir)
    tokenizer.save_pretrained(untrained_dir)

    for name, model_dir in (("trained", trained_dir), ("untrained", untrained_dir)):
        out = tmp_path / f"mem_{name}"
        rc = main(
            [
                "analyze",
                "memorization",
                "--model",
                str(model_dir),
                "--questions",
                str(qpath),
                "--prefix",
                "0.2,0.4,0.6,0.8",
                "--out",
                str(out),
                "--device",
                "cpu",
            ]
        )
        assert rc == 0
        result = json.loads((out / "memorization.json").read_text())
        assert [r["prefix"] for r in result["prefixes"]] == [0.2, 0.4, 0.6, 0.8]
        assert all(r["n"] == len(QUESTIONS) for r in result["prefixes"])
        assert (out / "memorization.png").stat().st_size > 0
        assert "| 80% |" in (out / "memorization.md").read_text()
        if name == "trained":
            assert all(r["exact_match"] == 1.0 and r["rouge_l"] == 1.0 for r in result["prefixes"])
        else:
            assert all(r["exact_match"] == 0.0 for r in result["prefixes"])
            assert all(r["rouge_l"] < 0.3 for r in result["prefixes"])
