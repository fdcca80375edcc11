"""``vllm.mode=trl_server``: vLLM's own OpenAI server in development mode, driven by TRL's ``VLLMClient``.

The engines are started as ``VLLM_SERVER_DEV_MODE=1 vllm serve MODEL --weight-transfer-config
'{"backend": "nccl"}'`` (``trl vllm-serve`` is deprecated by TRL). Weights travel GPU to GPU over NCCL
(``init_communicator`` once, then ``update_named_params`` per push); generation goes to ``/v1/completions``,
one request per prompt, concurrently, each with its own seed (vLLM's async engine batches them). Needs
trl >= 1.16 on the trainer (``common.trl_client_class`` names the installed version otherwise).
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import torch

from pasodoble.errors import UserError
from pasodoble.rollout.vllm.common import Output, Request, trl_client_class


class TRLEngine:
    """vLLM's OpenAI server (development mode, NCCL weight transfer) through TRL's ``VLLMClient``.

    Weights go over NCCL (``init_communicator`` once, then ``update_named_params`` per push), one
    ``/v1/completions`` request per prompt runs concurrently with its own seed. ``client`` replaces
    the ``VLLMClient`` (tests).
    """

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout_s: float = 300.0,
        group_port: int = 51216,
        max_concurrent: int = 64,
        client=None,
    ) -> None:
        self.base_url = base_url
        if client is None:
            VLLMClient = trl_client_class()
            try:
                client = VLLMClient(
                    base_url=base_url, group_port=group_port, connection_timeout=connect_timeout_s
                )
            except ImportError as exc:
                raise UserError(f"vllm.mode=trl_server: {exc}") from None
            except OSError as exc:  # requests' ConnectionError and the builtin one
                raise UserError(
                    f"vllm.mode=trl_server: no vLLM server answered at {base_url} within {connect_timeout_s:.0f} s "
                    f"({str(exc)[:160]}); start it with `VLLM_SERVER_DEV_MODE=1 vllm serve MODEL "
                    """--weight-transfer-config '{"backend": "nccl"}'` or fix vllm.*_url"""
                ) from None
        self.client = client
        self.max_concurrent = max_concurrent
        self._communicator = False

    def generate(self, requests: list[Request]) -> list[list[Output]]:
        def one(r: Request) -> list[Output]:
            s = r["sampling"]
            out = self.client.generate(
                prompts=[list(r["prompt_token_ids"])],
                n=s["n"],
                temperature=s["temperature"],
                top_p=s["top_p"],
                top_k=s["top_k"],
                max_tokens=s["max_tokens"],
                logprobs=0 if s["logprobs"] else None,
                generation_kwargs={"seed": s["seed"], "stop_token_ids": list(s["stop_token_ids"])},
            )
            lps, lp_ids = out.get("logprobs"), out.get("logprob_token_ids")
            group = []
            for j, ids in enumerate(out["completion_ids"]):
                ids = [int(t) for t in ids]
                stopped = bool(ids) and ids[-1] in s["stop_token_ids"]
                sampled = None
                if s["logprobs"] and lps:  # per token: the entry of the sampled id (others are top-k)
                    sampled = [float(v[k.index(t)]) for t, v, k in zip(ids, lps[j], lp_ids[j], strict=True)]
                group.append(
                    {"token_ids": ids, "finish_reason": "stop" if stopped else "length", "logprobs": sampled}
                )
            return group

        if not requests:
            return []
        with ThreadPoolExecutor(max_workers=min(self.max_concurrent, len(requests))) as pool:
            return list(pool.map(one, requests))

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]], metadata=None) -> None:
        if not self._communicator:
            device = torch.cuda.current_device() if torch.cuda.is_available() else "cpu"
            try:
                self.client.init_communicator(device=device)
            except NotImplementedError as exc:  # TRL: the NCCL weight transfer needs a CUDA device
                raise UserError(
                    f"vllm.mode=trl_server pushes weights over NCCL, which needs CUDA on the trainer ({exc}); "
                    "on CPU use vllm.mode=colocated or vllm.mode=server"
                ) from None
            self._communicator = True
        self.client.update_named_params(metadata, iter(weights))

    def reset_prefix_cache(self) -> None:
        self.client.reset_prefix_cache()

    def sleep(self, level: int = 2) -> None:
        pass

    def wake_up(self, tags: list[str] | None = None) -> None:
        pass


def weight_metadata(model: torch.nn.Module, dtype: torch.dtype | None) -> list[tuple[str, str, list[int]]]:
    """``(name, dtype, shape)`` of every tensor ``full_state_items(skip_tied=True)`` yields (global
    shapes, no gather)."""
    unique = {n for n, _ in model.named_parameters()}
    tied = {n for n, _ in model.named_parameters(remove_duplicate=False)} - unique
    out = []
    for name, t in model.state_dict().items():
        if name in tied:
            continue
        d = dtype if (dtype is not None and t.is_floating_point()) else t.dtype
        out.append((name, str(d).removeprefix("torch."), list(t.shape)))
    return out
