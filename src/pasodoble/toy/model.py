"""The toy world's tokenizer and model architecture.

Tokenizer: a byte-level BPE fitted to the toy corpus and the demo's prompt texts, with every digit
its own token (numbers are read and written digit by digit, which is what a model of a few million
parameters can learn arithmetic on) and the ChatML special tokens. Its chat template renders
``<|im_start|>user\\n…<|im_end|>\\n<|im_start|>assistant\\n``, so the prompt is a prefix of the
conversation and the generation prompt does not open ``<think>``.

Model: a Qwen3 decoder (``Qwen3ForCausalLM``) of about 1.8 M parameters, tied embeddings.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

from pasodoble.testing.tiny import SPECIAL_TOKENS, chatml_fast_tokenizer, seeded_qwen3

VOCAB_SIZE = 384

# Demo prompts (``proposer.prompt`` / ``solver.prompt`` of the demo config): short, because every
# prompt token is paid for in generation and in every learner forward pass.
PROPOSER_PROMPT = "Write a new problem based on this passage, then solve it.\n\n{snippet}"
SOLVER_PROMPT = "{problem}"

ARCHITECTURE = dict(
    hidden_size=192,
    intermediate_size=576,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=48,
    max_position_embeddings=512,
    tie_word_embeddings=True,
    rope_theta=10000.0,
)


def build_toy_tokenizer(texts: Iterable[str], vocab_size: int = VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """Fit the byte-level BPE (digits always single tokens) on ``texts``; deterministic for equal input."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\d"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return chatml_fast_tokenizer(tok, model_max_length=512)


def toy_model_config(tokenizer: PreTrainedTokenizerFast, **overrides) -> Qwen3Config:
    kwargs = dict(
        ARCHITECTURE,
        vocab_size=len(tokenizer),
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    kwargs.update(overrides)
    return Qwen3Config(**kwargs)


def build_toy_model(tokenizer: PreTrainedTokenizerFast, seed: int, **overrides) -> Qwen3ForCausalLM:
    """A freshly initialized toy model; weights depend only on ``seed`` (global RNG untouched)."""
    return seeded_qwen3(toy_model_config(tokenizer, **overrides), tokenizer, seed)
