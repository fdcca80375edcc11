"""Prompts: built-in templates, overrides and their validation, chat template and plain fallback."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from pasodoble.config import ConfigError, load_config
from pasodoble.parse import parse_proposal
from pasodoble.prompts import build_prompt, check_template, opens_thinking, user_message
from pasodoble.types import Question, Snippet

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tokenizer(chat_template: str | None = CHATML) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    if chat_template is not None:
        fast.chat_template = chat_template
    return fast


SNIPPET = Snippet("tiny:3", "The sum of two odd integers is even.")


def test_proposer_prompt_with_chat_template():
    prompt = build_prompt("proposer", tokenizer(), snippet=SNIPPET)
    assert prompt.startswith("<|im_start|>user\n")
    assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert SNIPPET.text in prompt
    assert "<problem>" in prompt and "</problem>" in prompt and "\\boxed{}" in prompt


def test_no_knowledge_prompt_omits_snippet():
    for snippet in (None, Snippet("none", ""), ""):
        text = user_message("proposer", snippet=snippet)
        assert "<snippet>" not in text and "passage" not in text and "<problem>" in text


def test_solver_prompt_and_plain_fallback():
    prompt = build_prompt("solver", tokenizer(chat_template=None), problem="What is 17 + 25?")
    assert prompt.startswith("User:\n") and prompt.endswith("\n\nAssistant:\n")
    assert "What is 17 + 25?" in prompt and "\\boxed{}" in prompt
    assert build_prompt("solver", None, problem="x") == build_prompt(
        "solver", tokenizer(chat_template=None), problem="x"
    )
    with pytest.raises(ValueError, match="problem"):
        build_prompt("solver", tokenizer())
    with pytest.raises(ValueError, match="role"):
        build_prompt("critic", tokenizer())


def test_open_thinking():
    prompt = build_prompt("solver", tokenizer(), problem="1+1?", open_thinking=True)
    assert prompt.endswith("<|im_start|>assistant\n<think>\n") and opens_thinking(prompt)
    assert not opens_thinking(build_prompt("solver", tokenizer(), problem="1+1?"))
    opened = tokenizer(CHATML.replace("assistant\n", "assistant\n<think>\n"))
    assert opened.chat_template.endswith("<think>\n{% endif %}")
    prompt = build_prompt("solver", opened, problem="1+1?", open_thinking=True)
    assert prompt.count("<think>") == 1


def test_template_override_literal_braces():
    template = "Snippet: {snippet}\nWrite <problem>..</problem> and \\boxed{answer}."
    text = user_message("proposer", snippet=SNIPPET, template=template)
    assert text == f"Snippet: {SNIPPET.text}\nWrite <problem>..</problem> and \\boxed{{answer}}."
    assert user_message("solver", problem="2+2?", template="Q: {problem} A:") == "Q: 2+2? A:"


def test_template_without_placeholder_is_config_error():
    with pytest.raises(ConfigError, match=r"proposer\.prompt .*\{snippet\}"):
        user_message("proposer", snippet=SNIPPET, template="Write a problem.")
    with pytest.raises(ConfigError, match=r"solver\.prompt .*\{problem\}"):
        check_template("Solve it.", "solver")
    # without knowledge the Proposer template may omit the snippet
    assert user_message("proposer", snippet=None, template="Write a problem.") == "Write a problem."


def test_config_validates_placeholders():
    with pytest.raises(ConfigError, match=r"proposer\.prompt"):
        load_config(overrides=["proposer.prompt=Write a problem."])
    with pytest.raises(ConfigError, match=r"solver\.prompt"):
        load_config(overrides=["solver.prompt=Solve it."])
    cfg = load_config(overrides=["proposer.prompt=Write a problem.", "knowledge.enabled=false"])
    assert cfg.proposer.prompt == "Write a problem."
    assert load_config(overrides=["rollout.open_thinking=true"]).rollout.open_thinking is True


def test_prompt_format_matches_parser():
    # a completion that follows the prompt's instructions parses
    completion = (
        "<think>odd+odd</think>\n<problem>Is 7 + 9 even? Give 1 for yes.</problem>\n7+9=16, \\boxed{1}"
    )
    assert parse_proposal(completion) == Question("Is 7 + 9 even? Give 1 for yes.", "1")
