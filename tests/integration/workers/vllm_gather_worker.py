"""One training process of ``test_vllm_gather.py`` (run under torchrun, gloo): a server-mode
``VLLMBackend`` whose ranks generate their own prompts through one request per round.

Usage: ``torchrun --nproc_per_node 2 -m tests.integration.workers.vllm_gather_worker URL OUT_DIR``.
Writes ``rank<R>.json``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.distributed as tdist  # noqa: E402

from pasodoble.config import load_config  # noqa: E402
from pasodoble.rollout.base import SamplingParams  # noqa: E402
from pasodoble.rollout.vllm import VLLMBackend  # noqa: E402
from pasodoble.testing.tiny import build_tiny_model, build_tiny_tokenizer  # noqa: E402


def main() -> None:
    url, out_dir = sys.argv[1], Path(sys.argv[2])
    tdist.init_process_group("gloo")
    rank = tdist.get_rank()
    torch.set_num_threads(1)
    tok = build_tiny_tokenizer()
    model = build_tiny_model(tok, seed=0)
    cfg = load_config(None, ["vllm.mode=server", f"vllm.proposer_url={url}", "vllm.connect_timeout_s=30"])
    backend = VLLMBackend(model, tok, role="proposer", vllm_cfg=cfg.vllm)  # pushes the weights (step 0)
    params = SamplingParams(max_new_tokens=8, seed=rank)
    first = backend.generate({0: [[1, 10], [1, 11]], 1: [[1, 20]]}[rank], params)
    second = backend.generate({0: [], 1: [[1, 30]]}[rank], params)  # rank 0 has nothing this round
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    backend.sync_weights(model)
    record = {
        "rank": rank,
        "first": [[c.completion_ids for c in g] for g in first],
        "second": [[c.completion_ids for c in g] for g in second],
        "has_client": backend.engine is not None,
    }
    (out_dir / f"rank{rank}.json").write_text(json.dumps(record))
    tdist.destroy_process_group()


if __name__ == "__main__":
    main()
