"""parallel.py: the layout a run trains under, master-weight upcast, and the generation replica."""

from __future__ import annotations

import pytest
import torch

from pasodoble.config import Config, ConfigError, load_config
from pasodoble.errors import UserError
from pasodoble.parallel import (
    GenerationReplica,
    Parallelism,
    ReplicaBackend,
    build_accelerator,
    compute_dtype,
    decoder_layers,
    upcast_master,
)
from pasodoble.rollout.base import SamplingParams
from pasodoble.testing.tiny import build_tiny_model


def test_describe_names_strategy_processes_and_precision():
    assert Parallelism("fsdp2", torch.bfloat16, 2).describe() == (
        "strategy: fsdp2, 2 processes, compute bfloat16, master weights and optimizer state float32"
    )
    assert Parallelism().describe().startswith("strategy: none, 1 process, compute float32")
    with pytest.raises(ValueError, match="strategy must be one of"):
        Parallelism("deepspeed_zero3")


def test_compute_dtypes_and_removed_choices():
    assert compute_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(UserError, match="float16 would need loss scaling"):
        compute_dtype("float16")
    cfg = Config()
    with pytest.raises(ConfigError, match="distributed.strategy must be one of fsdp2, ddp, deepspeed_zero2"):
        load_config(None, ["distributed.strategy=deepspeed_zero3"])
    assert cfg.distributed.strategy == "fsdp2"


def test_one_process_without_torchrun_trains_unsharded_and_says_so(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    cfg = load_config(None, ["model.dtype=bfloat16"])  # distributed.strategy defaults to fsdp2
    acc, par = build_accelerator(cfg.distributed.strategy, cfg.model.dtype, cpu=True)
    assert par == Parallelism("none", torch.bfloat16, 1) and acc.num_processes == 1


def test_autocast_only_where_the_weights_stay_float32():
    cpu = torch.device("cpu")
    with Parallelism("none", torch.bfloat16).autocast(cpu):
        assert torch.is_autocast_enabled("cpu")
    for layout in (Parallelism("none", torch.float32), Parallelism("fsdp2", torch.bfloat16, 2)):
        with layout.autocast(cpu):
            assert not torch.is_autocast_enabled("cpu")


def test_upcast_master_makes_every_16_bit_weight_float32(tiny_tokenizer):
    model = build_tiny_model(tiny_tokenizer, seed=0, dtype=torch.bfloat16)
    values = {k: v.clone() for k, v in model.state_dict().items()}
    upcast_master(model)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    # exact: every bfloat16 value is a float32 value
    assert all(torch.equal(v.float(), model.state_dict()[k]) for k, v in values.items())
    assert len(decoder_layers(model)) == model.config.num_hidden_layers


class _Recorder:
    def __init__(self, model):
        self.model = model
        self.calls = 0

    def generate(self, prompts, params):
        self.calls += 1
        return [[None] for _ in prompts]


def test_generation_replica_loads_a_role_only_when_stale_or_switched(tiny_tokenizer):
    proposer = build_tiny_model(tiny_tokenizer, seed=1)
    solver = build_tiny_model(tiny_tokenizer, seed=2)
    replica = GenerationReplica(proposer, torch.bfloat16, torch.device("cpu"))
    assert {p.dtype for p in replica.model.parameters()} == {torch.bfloat16}
    inner = _Recorder(replica.model)
    backends = {
        "proposer": ReplicaBackend("proposer", inner, replica, proposer),
        "solver": ReplicaBackend("solver", inner, replica, solver),
    }
    params = SamplingParams(max_new_tokens=1)

    def held_weights_equal(model) -> bool:
        ref = model.state_dict()
        return all(torch.equal(v, ref[k].to(torch.bfloat16)) for k, v in replica.model.state_dict().items())

    assert backends["solver"].generate([[1, 2]], params) == [[None]]
    assert replica.holds == "solver" and held_weights_equal(solver)
    assert backends["solver"].pop_sync_seconds() > 0 and backends["solver"].pop_sync_seconds() == 0
    backends["solver"].generate([], params)  # the same role, not stale: no load (and no generation)
    assert backends["solver"].pop_sync_seconds() == 0 and inner.calls == 1
    backends["proposer"].generate([[3]], params)  # a role switch loads the other weights
    assert replica.holds == "proposer" and held_weights_equal(proposer)
    with torch.no_grad():
        proposer.lm_head.weight.add_(1.0)
    backends["proposer"].sync_weights(proposer)  # after an update: stale
    assert replica.holds is None
    backends["proposer"].generate([], params)  # an empty share still loads (a collective under FSDP2)
    assert replica.holds == "proposer" and held_weights_equal(proposer) and inner.calls == 2
    assert backends["proposer"].local() is inner


def test_dcp_metadata_is_read_without_running_code(tmp_path):
    """Issue 16.4: DCP unpickles a sharded checkpoint's .metadata with no restriction; ours admits DCP's
    own classes only, so a crafted one is refused before anything runs."""
    import pickle

    from pasodoble.checkpoint import read_dcp_metadata

    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    crafted = tmp_path / ".metadata"
    crafted.write_bytes(pickle.dumps({"state_dict_metadata": Payload()}))
    with pytest.raises(pickle.UnpicklingError, match="never holds"):
        read_dcp_metadata(crafted)
    assert not (tmp_path / "pwned").exists()
