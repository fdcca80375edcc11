"""The toy world's tokenizer and model architecture (pasodoble.toy.model)."""

from __future__ import annotations

import pytest

from pasodoble.prompts import SOLVER, build_prompt, opens_thinking
from pasodoble.toy.model import SOLVER_PROMPT, build_toy_model, build_toy_tokenizer

TEXTS = [
    "What is (34 + 8) * 3 - 17?\n(34 + 8) * 3 - 17\n34 + 8 = 42, leaving 42 * 3 - 17\n42 * 3 = 126, leaving 126 - 17\n"
    "126 - 17 = 109\nThe answer is 109.",
    "901 times 5 is 4505.",
] * 20


@pytest.fixture(scope="module")
def tok():
    return build_toy_tokenizer(TEXTS, vocab_size=300)


def test_every_digit_is_its_own_token(tok):
    pieces = tok.tokenize("126 - 17 = 109")
    digits = [p for p in pieces if any(ch.isdigit() for ch in p)]
    assert digits == list("12617109")
    assert tok.decode(tok("126 - 17 = 109").input_ids) == "126 - 17 = 109"


def test_chat_prompt_is_a_prefix_of_the_conversation_and_does_not_open_thinking(tok):
    prompt = build_prompt(SOLVER, tok, problem="What is 2 + 3?", template=SOLVER_PROMPT)
    full = tok.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "\\boxed{5}"}],
        tokenize=False,
    )
    assert full.startswith(prompt) and not opens_thinking(prompt)
    assert tok.eos_token == "<|im_end|>" and tok.padding_side == "left"


def test_tokenizer_and_model_are_deterministic(tok):
    again = build_toy_tokenizer(TEXTS, vocab_size=300)
    assert again.get_vocab() == tok.get_vocab()
    a, b = build_toy_model(tok, seed=3), build_toy_model(tok, seed=3)
    assert all((x == y).all() for x, y in zip(a.parameters(), b.parameters(), strict=True))
    c = build_toy_model(tok, seed=4)
    assert any((x != y).any() for x, y in zip(a.parameters(), c.parameters(), strict=True))
    n = sum(p.numel() for p in a.parameters())
    assert 1.5e6 < n < 2.2e6  # "a few million parameters"; 3.7 MB per checkpoint in bfloat16
