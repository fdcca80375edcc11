"""The built-in ``tiny`` model family: a deterministic, hub-free model and tokenizer.

``model.name_or_path: tiny`` (and ``--model tiny``) loads these (``pasodoble.models``): a pipeline check
on any machine, with no download. Tests and smoke runs use them too (``pasodoble.testing``).

``build_tiny_tokenizer()`` trains a byte-level BPE (vocabulary ~1k) on a small fixed arithmetic and
English corpus with the ``tokenizers`` library and wraps it as a ``PreTrainedTokenizerFast`` with a
ChatML chat template. ``build_tiny_model(tokenizer, seed)`` builds a ~1 M-parameter
``Qwen3ForCausalLM`` whose weights depend only on ``seed`` (byte-identical across runs with the same
torch version). Both take well under a second on a laptop CPU.

The tokenizer is deliberately *not* created through ``AutoTokenizer`` with a Qwen2 model type, which
would substitute a Qwen2 tokenizer class that re-splits digits and changes the token ids.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END)

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _arithmetic_lines() -> list[str]:
    lines = []
    for a in range(0, 20):
        for b in range(0, 20, 3):
            lines.append(f"What is {a} + {b}? The answer is \\boxed{{{a + b}}}.")
            lines.append(
                f"Compute {a} * {b}. We get {a} * {b} = {a * b}, so the answer is \\boxed{{{a * b}}}."
            )
        lines.append(f"If x + {a} = {2 * a + 7}, then x = {a + 7}.")
        lines.append(f"Subtract: {a + 30} - {a} = 30. Divide: {a * 6} / 6 = {a}. Square: {a}^2 = {a * a}.")
    for i, word in enumerate(_WORDS):
        lines.append(f"The {word} problem number {i} asks for the {_WORDS[(i * 7) % len(_WORDS)]} value.")
    return lines


_WORDS = (
    "triangle circle square number integer fraction prime divisor remainder equation solution "
    "variable function polynomial root probability average median percent ratio distance speed "
    "time money price apples oranges students teacher school train hour minute angle degree "
    "volume surface cube sphere radius diameter sequence series sum product difference quotient "
    "factor multiple digit even odd positive negative greater smaller largest smallest total "
    "remaining each every first second third last several many few count"
).split()


TINY_CORPUS: tuple[str, ...] = (
    "Solve the problem and put the final answer in \\boxed{}.",
    "<think>Let me think step by step.</think>",
    "<problem>A farmer has 12 apples and gives away 5. How many are left?</problem>",
    "The sum of two numbers is 17 and their difference is 3. Find the larger number.",
    "A rectangle has length 8 and width 3. Its area is 24 and its perimeter is 22.",
    "The knowledge snippet describes fractions, primes, squares, and remainders.",
    "Therefore the final answer is 7. Check: 3 + 4 = 7 and 14 / 2 = 7.",
    "Write a new math question with its answer. The question must be clear and solvable.",
    *_arithmetic_lines(),
)


def build_tiny_tokenizer(vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``TINY_CORPUS`` and wrap it for transformers.

    Special tokens: ``<|endoftext|>`` (pad, id 0), ``<|im_start|>`` (1), ``<|im_end|>`` (2, eos).
    Padding side is left (what batched generation needs). Deterministic: same ids on every run.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TINY_CORPUS, trainer=trainer)
    return chatml_fast_tokenizer(tok, model_max_length=4096)


def chatml_fast_tokenizer(tok: Tokenizer, *, model_max_length: int) -> PreTrainedTokenizerFast:
    """Wrap a trained ``tokenizers.Tokenizer`` (with ``SPECIAL_TOKENS``) for transformers: pad
    ``<|endoftext|>``, EOS ``<|im_end|>``, left padding, the ChatML chat template."""
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        bos_token=None,
        unk_token=None,
        padding_side="left",
        model_max_length=model_max_length,
    )
    fast.add_special_tokens({"additional_special_tokens": [IM_START]})
    fast.chat_template = CHATML_TEMPLATE
    return fast


def tiny_model_config(tokenizer: PreTrainedTokenizerFast, **overrides) -> Qwen3Config:
    """Config of the ~1 M-parameter Qwen3 model (tied embeddings, 4 layers of width 128)."""
    kwargs = dict(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    kwargs.update(overrides)
    return Qwen3Config(**kwargs)


def build_tiny_model(
    tokenizer: PreTrainedTokenizerFast, seed: int = 0, dtype: torch.dtype = torch.float32, **overrides
) -> Qwen3ForCausalLM:
    """Build the tiny Qwen3 model with weights that depend only on ``seed``.

    The global RNG is left untouched (initialization runs under ``torch.random.fork_rng``).
    """
    return seeded_qwen3(tiny_model_config(tokenizer, **overrides), tokenizer, seed).to(dtype)


def seeded_qwen3(config: Qwen3Config, tokenizer, seed: int) -> Qwen3ForCausalLM:
    """A fresh ``Qwen3ForCausalLM`` whose weights depend only on ``seed`` (global RNG untouched), with
    the tokenizer's EOS and pad ids in its generation config."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    return model
