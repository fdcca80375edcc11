"""``VLLMBackend``: the ``GenerationBackend`` on vLLM, in one of three modes (``vllm.mode``).

- ``colocated`` (``local.py``): one in-process engine per training process serving both roles;
- ``server`` (``server.py``): our engine server per role, weights pushed over HTTP;
- ``trl_server`` (``trl.py``): vLLM's own server per role, driven by TRL's client, weights over NCCL.

Prompts go in as token ids; ``completion_ids`` are the engine's output ids (the stop token that ended a
completion is kept). Stop ids: the EOS ids and the chat template's end-of-turn id
(``base.stop_token_ids``). Each prompt gets its own seed (``SamplingParams.seed`` and its index, or
``SamplingParams.seeds``). Log-probabilities, when asked for, are vLLM's default ``raw_logprobs`` (the
model's, before temperature and top-k/top-p): the learner recomputes its own and never uses them.
"""

from __future__ import annotations

import time

import torch

from pasodoble import distributed as dist
from pasodoble.config import VLLMConfig
from pasodoble.errors import UserError
from pasodoble.rollout.base import Completion, GenerationBackend, SamplingParams, stop_token_ids
from pasodoble.rollout.vllm.common import DTYPES, Engine, Output, Request
from pasodoble.rollout.vllm.local import ColocatedEngine, colocated_engine
from pasodoble.seeds import derive_seed
from pasodoble.weights import full_state_items


class VLLMBackend(GenerationBackend):
    """``GenerationBackend`` on vLLM; see the module docstring for the three modes.

    Args:
        model: the role's (unwrapped) training model: its weights are loaded into the colocated engine
            before the role generates, or pushed to the role's server now and after every update.
        tokenizer: decodes completions (the same tokenizer as the learner's).
        role: 'proposer' or 'solver' (picks ``vllm.<role>_url`` in the server modes).
        vllm_cfg: the ``vllm`` section (mode, URLs, memory share, timeouts); its defaults when None.
        dtype: the engine's dtype (``model.dtype``): weights are cast to it when loaded or pushed.
        seed: the engine's seed (``run.seed``; every request carries its own seed too).
        max_model_len: the engine's context length (colocated; see ``max_model_len`` below).
        engine: an engine to use instead of building one (tests, custom deployments); in colocated mode
            pass the same ``ColocatedEngine`` to both roles.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        *,
        role: str = "policy",
        vllm_cfg: VLLMConfig | None = None,
        dtype: str = "bfloat16",
        seed: int = 0,
        max_model_len: int = 8192,
        generation_batch_size: int = 64,
        engine: Engine | ColocatedEngine | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.role = role
        self.vcfg = vllm_cfg if vllm_cfg is not None else VLLMConfig()
        self.mode = self.vcfg.mode
        self.generation_batch_size = generation_batch_size  # the engine schedules its own batches
        self.eos_token_ids = stop_token_ids(model, tokenizer)
        if dtype not in DTYPES:
            raise UserError(f"the vLLM engine's dtype must be one of {sorted(DTYPES)}; got {dtype!r}")
        self.dtype = DTYPES[dtype]
        self.model = model
        self.shared: ColocatedEngine | None = None
        self.engine: Engine | None = None
        if self.mode == "colocated":
            if isinstance(engine, ColocatedEngine):
                self.shared = engine
            elif engine is not None:
                self.shared = ColocatedEngine(
                    engine, sleep_between_steps=self.vcfg.sleep_between_steps, dtype=self.dtype
                )
            else:
                self.shared = colocated_engine(
                    model, tokenizer, vllm_cfg=self.vcfg, dtype=dtype, max_model_len=max_model_len, seed=seed
                )
            self.shared.invalidate(role)  # a new backend brings the role's weights: whatever is held is stale
            return
        if dist.is_main():  # only the main process talks to the server
            self.engine = engine if engine is not None else self._client()
        started = time.perf_counter()
        self.sync_weights(model)  # step 0: the engine serves this role's starting weights from now on
        self._sync_seconds += time.perf_counter() - started  # reported with the first step's metrics

    def _client(self) -> Engine:
        v = self.vcfg
        url = getattr(v, f"{self.role}_url", None)
        if not url:
            raise UserError(
                f"vllm.mode={self.mode} needs vllm.{self.role}_url (the {self.role} engine's base URL)"
            )
        if self.mode == "trl_server":
            from pasodoble.rollout.vllm.trl import TRLEngine

            port = v.nccl_group_port + (1 if self.role == "solver" else 0)
            return TRLEngine(url, connect_timeout_s=v.connect_timeout_s, group_port=port)
        from pasodoble.rollout.vllm.server import RemoteEngine, engine_token

        return RemoteEngine(
            url,
            request_timeout_s=v.request_timeout_s,
            weight_sync_timeout_s=v.weight_sync_timeout_s,
            connect_timeout_s=v.connect_timeout_s,
            bucket_bytes=int(v.bucket_mb * 1024**2),
            token=engine_token(v.token_env),
        )

    # ------------------------------------------------------------------ the lifecycle

    def _requests(self, prompts: list[list[int]], params: SamplingParams) -> list[Request]:
        if any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        if params.seeds is not None and len(params.seeds) != len(prompts):
            raise ValueError(f"params.seeds has {len(params.seeds)} seeds for {len(prompts)} prompts")
        if params.seeds is None:  # one engine seed per prompt, from the call's seed and the prompt's index
            seeds = [derive_seed(params.seed, i, bits=32) for i in range(len(prompts))]
        else:
            seeds = [int(seed) for seed in params.seeds]
        return [
            {
                "prompt_token_ids": list(p),
                "sampling": {
                    "n": params.n,
                    "temperature": params.temperature,
                    "top_p": params.top_p,
                    "top_k": params.top_k,
                    "max_tokens": params.max_new_tokens,
                    "seed": seed,
                    "logprobs": params.return_logprobs,
                    "stop_token_ids": self.eos_token_ids,
                },
            }
            for p, seed in zip(prompts, seeds, strict=True)
        ]

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        """Every process calls this in the same order (an empty list where it has no prompts): the
        colocated engine's weight loads and the server modes' gather are collectives."""
        return self._generate(prompts, params, local_only=False)

    def hold(self) -> None:
        """Every process calls this before the main process generates alone (``local()``): the engine loads
        this role's current weights now (a collective under FSDP2) and keeps them until the next collective
        ``generate``, sleep mode or not. The server modes hold the pushed weights already."""
        if self.mode == "colocated":
            self._sync_seconds += self.shared.pin(self.role, self.model)

    def local(self) -> _LocalView:
        """A view whose ``generate`` involves this process only (evaluation on the main process): no
        gather; a colocated load of FSDP2-sharded weights then raises instead of hanging."""
        return _LocalView(self)

    def _generate(self, prompts, params, *, local_only: bool) -> list[list[Completion]]:
        requests = self._requests(prompts, params)
        if self.mode == "colocated":
            outputs, seconds = self.shared.run(self.role, self.model, requests, local_only=local_only)
            self._sync_seconds += seconds
        elif local_only or dist.world_size() == 1:
            outputs = self.engine.generate(requests) if requests else []
        else:  # one request per role per step: gather every process's prompts, scatter the results
            counts = dist.gather_list([len(requests)])
            everything = dist.gather_list(requests)
            every_output = dist.main_then_broadcast(
                lambda: self.engine.generate(everything) if everything else []
            )
            start = sum(counts[: dist.rank()])
            outputs = every_output[start : start + len(requests)]
        result: list[list[Completion]] = []
        for prompt, group in zip(prompts, outputs, strict=True):
            if len(group) != params.n:
                raise RuntimeError(f"the vLLM engine returned {len(group)} completions, expected {params.n}")
            result.append([self._completion(prompt, o, params) for o in group])
        return result

    def _completion(self, prompt: list[int], o: Output, params: SamplingParams) -> Completion:
        ids = [int(t) for t in o["token_ids"]]
        ended = bool(ids) and ids[-1] in self.eos_token_ids
        finish = "length" if o["finish_reason"] == "length" and not ended else "eos"
        logprobs = o.get("logprobs") if params.return_logprobs else None
        if params.return_logprobs and (logprobs is None or len(logprobs) != len(ids)):
            raise RuntimeError("the vLLM engine returned no per-token logprobs for every sampled token")
        return Completion(
            prompt_ids=list(prompt),
            completion_ids=ids,
            text=self.tokenizer.decode(ids, skip_special_tokens=True),
            finish_reason=finish,
            logprobs=[float(x) for x in logprobs] if logprobs is not None else None,
        )

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Give the engine ``model``'s weights (every process calls this after each update).

        Colocated: marks the role's weights stale; they load before its next generation. Server modes:
        pushes them now from the main process (the others take part in the FSDP2 gathers) and resets the
        prefix cache; the HTTP server's weight hash is checked.
        """
        self.model = model
        if self.mode == "colocated":
            self.shared.invalidate(self.role)
            return
        items = full_state_items(model, dtype=self.dtype, keep=dist.is_main(), skip_tied=True)
        if not dist.is_main():
            for _ in items:  # take part in the FSDP gathers
                pass
            dist.main_then_broadcast(lambda: None)
            return
        metadata = None
        if self.mode == "trl_server":
            from pasodoble.rollout.vllm.trl import weight_metadata

            metadata = weight_metadata(model, self.dtype)

        def push() -> None:
            try:
                if metadata is not None:
                    self.engine.load_weights(items, metadata=metadata)
                else:
                    self.engine.load_weights(items)
            except BaseException:
                for _ in items:  # finish the gathers the other processes are waiting in
                    pass
                raise
            if self.mode == "trl_server":
                self.engine.reset_prefix_cache()  # our server resets it when the update finishes

        dist.main_then_broadcast(push)


class _LocalView(GenerationBackend):
    """``VLLMBackend.local()``: generate on this process alone."""

    def __init__(self, backend: VLLMBackend) -> None:
        self.backend = backend

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        return self.backend._generate(prompts, params, local_only=True)

    def sync_weights(self, model: torch.nn.Module) -> None:
        self.backend.sync_weights(model)


def max_model_len(vllm_cfg: VLLMConfig, max_prompt_tokens: int, max_new_tokens: int) -> int:
    """The engine's context length: ``vllm.max_model_len``, else the longest prompt plus completion."""
    if vllm_cfg.max_model_len is not None:
        return vllm_cfg.max_model_len
    return max_prompt_tokens + max_new_tokens
