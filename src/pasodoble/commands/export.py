"""`pasodoble export CKPT --role R --out DIR`: a role of a training checkpoint as a Hugging Face directory.

    pasodoble export RUN/checkpoints/step_00000200 --role solver --out models/solver-200 \\
        [--dtype float32|bfloat16] [--train-config RUN/config.yaml] [--adapter-only]

The checkpoint's files are checked against their recorded sha256 first; the config and tokenizer come
from the role's starting model named in the run's config.yaml; LoRA adapters are merged. The result
loads with ``AutoModelForCausalLM.from_pretrained(DIR)`` (see docs/evaluation.md). ``--adapter-only``
writes a LoRA role's peft adapter files instead, for ``PeftModel.from_pretrained(base_model, DIR)``.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a training checkpoint directory, RUN/checkpoints/step_N")
    parser.add_argument("--role", required=True, choices=("proposer", "solver"), help="which model to export")
    parser.add_argument("--out", required=True, help="new (or empty) output directory")
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "bfloat16"),
        help="dtype of the written weights (default float32: the training master weights, exactly)",
    )
    parser.add_argument(
        "--train-config",
        default=None,
        metavar="CONFIG.yaml",
        help="the run's config.yaml (default: RUN/config.yaml above the checkpoint)",
    )
    parser.add_argument(
        "--adapter-only",
        action="store_true",
        help="LoRA roles: write only peft's adapter files (adapter_config.json, adapter_model.safetensors), "
        "for PeftModel.from_pretrained(base_model, DIR); refused for a role trained with full weights",
    )


def run(args: argparse.Namespace) -> int:
    from pasodoble.api import export

    result = export(
        args.checkpoint,
        args.role,
        args.out,
        dtype=args.dtype,
        train_config=args.train_config,
        adapter_only=args.adapter_only,
    )
    extra = ", LoRA adapters merged" if result.lora_merged else ""
    extra = ", LoRA adapters only" if args.adapter_only else extra
    print(
        f"wrote {result.out_dir}: the {result.role} of {result.checkpoint} (step {result.step}, "
        f"{result.layout} layout{extra})"
    )
    return 0
