"""Decode speed of the transformers backends (``hf`` and ``hf_batched``) side by side.

``decode_benchmark(model, tokenizer)`` times each backend on the same prompts: ``batch`` prompts of
``prompt_tokens`` random ids, exactly ``new_tokens`` sampled tokens each (the stop id is one the model
cannot produce, so every row runs to the end). Each backend first runs a short warm-up call. Reported
per backend: ``decode_ms_per_step`` (decode time without graph captures, divided by the forward
passes after the prefill), ``capture_s``, ``prefill_s``, ``seconds`` and ``tokens_per_s`` end to end.

From a GPU check script::

    from pasodoble.rollout.bench import decode_benchmark, random_model
    model, tok = random_model("qwen3-1.7b", device="cuda", dtype=torch.float32)
    print(decode_benchmark(model, tok, compute_dtype=torch.bfloat16))

or ``python -m pasodoble.rollout.bench --shape qwen3-1.7b --device cuda --compute-dtype bfloat16``
(``--shape tiny --device cpu`` runs the same code on CPU). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

from pasodoble.rollout.base import SamplingParams

SHAPES = {
    "tiny": None,
    "qwen3-0.6b": "Qwen/Qwen3-0.6B-Base",
    "qwen3-1.7b": "Qwen/Qwen3-1.7B-Base",
    "qwen3-4b": "Qwen/Qwen3-4B-Base",
}


def random_model(shape: str, *, device: str = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0):
    """A random-init Qwen3 model of a named shape (``SHAPES``) on ``device``, with the tiny tokenizer
    (the benchmark feeds token ids; the tokenizer only decodes). No download."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from pasodoble.testing.tiny import build_tiny_model, build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    if shape not in SHAPES:
        raise ValueError(f"--shape must be one of {', '.join(SHAPES)}; got {shape!r}")
    if SHAPES[shape] is None:
        return build_tiny_model(tokenizer, seed=seed, dtype=dtype).to(device), tokenizer
    from pasodoble.topology import KNOWN_ARCHITECTURES

    a = KNOWN_ARCHITECTURES[SHAPES[shape]]
    config = Qwen3Config(
        vocab_size=a.vocab_size,
        hidden_size=a.hidden_size,
        intermediate_size=a.intermediate_size,
        num_hidden_layers=a.num_layers,
        num_attention_heads=a.num_heads,
        num_key_value_heads=a.num_kv_heads,
        head_dim=a.head_dim,
        tie_word_embeddings=a.tie_word_embeddings,
        max_position_embeddings=32768,
        attn_implementation="sdpa",
    )
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Qwen3ForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval(), tokenizer


def decode_benchmark(
    model: torch.nn.Module,
    tokenizer,
    *,
    backends: tuple[str, ...] = ("hf", "hf_batched"),
    batch: int = 64,
    prompt_tokens: int = 128,
    new_tokens: int = 256,
    compute_dtype: torch.dtype | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Time each backend's ``generate`` on the same prompts; see the module docstring."""
    from pasodoble.rollout.hf import HFBackend
    from pasodoble.rollout.hf_batched import HFBatchedBackend

    vocab = model.get_output_embeddings().weight.shape[0]
    gen = torch.Generator().manual_seed(seed)
    prompts = torch.randint(3, vocab, (batch, prompt_tokens), generator=gen).tolist()
    never = [vocab]  # a stop id outside the vocabulary: every row runs to new_tokens
    classes = {"hf": HFBackend, "hf_batched": HFBatchedBackend}
    device = next(model.parameters()).device
    result: dict[str, Any] = {
        "batch": batch,
        "prompt_tokens": prompt_tokens,
        "new_tokens": new_tokens,
        "device": str(device),
        "parameters": sum(p.numel() for p in model.parameters()),
        "param_dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "compute_dtype": str(compute_dtype).removeprefix("torch.") if compute_dtype else None,
    }
    for name in backends:
        backend = classes[name](
            model, tokenizer, generation_batch_size=batch, eos_token_ids=never, compute_dtype=compute_dtype
        )
        backend.generate(prompts, SamplingParams(temperature=1.0, max_new_tokens=8, seed=seed))  # warm-up
        params = SamplingParams(temperature=1.0, max_new_tokens=new_tokens, seed=seed)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        out = backend.generate(prompts, params)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - started
        stats = backend.last_stats
        forwards = max(1, stats["decode_steps"] - 1)
        decode_s = stats["decode_s"] - stats.get("capture_s", 0.0)
        result[name] = {
            "decode_ms_per_step": round(1000 * decode_s / forwards, 3),
            "capture_s": round(stats.get("capture_s", 0.0), 3),
            "prefill_s": round(stats["prefill_s"], 3),
            "seconds": round(seconds, 3),
            "tokens_per_s": round(sum(len(g[0].completion_ids) for g in out) / seconds, 1),
            "graph_error": getattr(backend, "graph_error", None),
        }
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pasodoble.rollout.bench", description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="qwen3-1.7b", choices=sorted(SHAPES))
    ap.add_argument("--device", default="cuda")
    ap.add_argument(
        "--param-dtype", default="float32", help="dtype of the model's weights (the learner's masters)"
    )
    ap.add_argument("--compute-dtype", default="bfloat16", help="decode dtype; 'none' = the weights' dtype")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--backends", default="hf,hf_batched")
    args = ap.parse_args(argv)
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "none": None}
    model, tokenizer = random_model(args.shape, device=args.device, dtype=dtypes[args.param_dtype])
    result = decode_benchmark(
        model,
        tokenizer,
        backends=tuple(b for b in args.backends.split(",") if b),
        batch=args.batch,
        prompt_tokens=args.prompt_tokens,
        new_tokens=args.new_tokens,
        compute_dtype=dtypes[args.compute_dtype],
    )
    result["shape"] = args.shape
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
