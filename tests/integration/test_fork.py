"""Forking a run: `pasodoble train NEW.yaml --init-from RUN/checkpoints/step_N [--init-state]`.

Run A is 2 steps of configs/toy.yaml (the shipped toy models, which write valid problems, so both roles
update every step) with a checkpoint after each step. The new run starts at step 0 and so draws the rollout
seeds of its own step 0; A's second step drew step 1's. To compare a fork's first update with A's next one
on the same data, ``test_an_init_state_fork_makes_the_original_runs_next_update`` builds the forked run
exactly as ``pasodoble train`` does and has its engine take step 1: its weights then equal A's step-2
checkpoint bit for bit, which needs the weights, the AdamW moments and step counts, the knowledge position,
the diversity history and the question buffer all carried. The other tests run the command itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from pasodoble.cli import main
from pasodoble.config import load_config
from pasodoble.errors import UserError
from pasodoble.fork import ForkSource, check_layout, open_fork
from pasodoble.train import Trainer, run_training

ROOT = Path(__file__).resolve().parents[2]
TOY_CFG = ROOT / "configs" / "toy.yaml"
TINY_CFG = ROOT / "configs" / "tiny.yaml"
TOY = ROOT / "src" / "pasodoble" / "assets" / "toy"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
QUIET = ["run.progress=false", "run.threads=1"]
ROLES = ("proposer", "solver")


@pytest.fixture(scope="module")
def run_a(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fork") / "A"
    cfg = load_config(
        TOY_CFG,
        [f"run.out_dir={out}", "run.max_steps=2", "run.checkpoint_every=1", "run.keep_checkpoints=3", *QUIET],
    )
    assert run_training(cfg)["updates"] == 2
    return out


def _ckpt(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step_{step:08d}"


def _pt(run: Path, step: int, role: str) -> dict:
    return torch.load(_ckpt(run, step) / f"{role}.pt", weights_only=True)


def _trainer(out: Path, ckpt: Path, *extra: str) -> tuple[Trainer, ForkSource]:
    """The forked run as `pasodoble train` builds it (run_training's steps before run())."""
    cfg = load_config(TOY_CFG, [f"run.out_dir={out}", *QUIET, f"init_from.checkpoint={ckpt}", *extra])
    fork = open_fork(cfg)
    return Trainer(cfg, out, resume=False, fork=fork), fork


def _one_line_error(capsys, argv: list[str], *needles: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code != 0 and "Traceback" not in err and err.count("\n") == 0, err
    for needle in needles:
        assert needle in err, err
    return err


def test_an_init_state_fork_makes_the_original_runs_next_update(run_a, tmp_path):
    trainer, fork = _trainer(tmp_path / "B", _ckpt(run_a, 1), "init_from.state=true")
    try:
        a1 = {r: _pt(run_a, 1, r) for r in ROLES}
        a2 = {r: _pt(run_a, 2, r) for r in ROLES}
        for role in (trainer.engine.proposer, trainer.engine.solver):
            opt = role.learner.optimizer
            # carried: the checkpoint's AdamW state (one step taken), this config's learning rate, step 0
            assert [float(s["step"]) for s in opt.state.values()] == [1.0] * len(
                a1[role.name]["optimizer"]["state"]
            )
            assert [g["lr"] for g in opt.param_groups] == [getattr(trainer.cfg, role.name).learning_rate]
            assert role.learner.step == 0
        assert (
            trainer.engine.knowledge.position
            == json.loads((_ckpt(run_a, 1) / "state.json").read_text())["state"]["knowledge"]["position"]
            > 0
        )
        result = trainer.engine.online_step(1)  # A's second step: same seeds, same snippet
        assert result.trained and result.skipped is None
        for role in (trainer.engine.proposer, trainer.engine.solver):
            now = role.learner.unwrapped_model.state_dict()
            before, after = a1[role.name]["model"], a2[role.name]["model"]
            assert any(not torch.equal(now[k], before[k]) for k in before), f"{role.name} did not move"
            assert all(torch.equal(now[k], after[k]) for k in after), f"{role.name} differs from A's step 2"
            mine = role.learner.optimizer.state_dict()["state"]
            theirs = a2[role.name]["optimizer"]["state"]
            assert mine.keys() == theirs.keys()
            for i in theirs:
                assert float(mine[i]["step"]) == 2.0
                assert torch.equal(mine[i]["exp_avg"], theirs[i]["exp_avg"])
                assert torch.equal(mine[i]["exp_avg_sq"], theirs[i]["exp_avg_sq"])
    finally:
        trainer.close()
    assert "AdamW states, question buffer, diversity history, knowledge position" in fork.describe()


def test_a_weights_only_fork_starts_from_the_checkpoint_with_a_fresh_optimizer(run_a, tmp_path):
    trainer, fork = _trainer(tmp_path / "B", _ckpt(run_a, 1))
    try:
        for role in (trainer.engine.proposer, trainer.engine.solver):
            ckpt = _pt(run_a, 1, role.name)["model"]
            now = role.learner.unwrapped_model.state_dict()
            assert all(torch.equal(now[k], v) for k, v in ckpt.items())
            assert len(role.learner.optimizer.state) == 0 and role.learner.step == 0
        assert trainer.engine.knowledge.position == 0  # the new run's own knowledge order
        assert len(trainer.engine.diversity.state_dict()["history"]) == 0
    finally:
        trainer.close()
    assert fork.describe().endswith("weights of both roles; this run starts at step 0")


def test_the_command_forks_records_the_origin_trains_and_resumes(run_a, tmp_path, capsys):
    out = tmp_path / "B"
    ckpt = _ckpt(run_a, 1)
    args = [
        "train",
        str(TOY_CFG),
        f"run.out_dir={out}",
        "run.max_steps=1",
        *QUIET,
        "proposer.learning_rate=1e-5",
    ]
    assert main([*args, "--init-from", str(ckpt), "--init-state"]) == 0
    err = capsys.readouterr().err
    assert "Loading weights" not in err and "Writing model shards" not in err  # run.progress=false: no bars
    assert (
        f"pasodoble train: initialized from {ckpt} (step 1, none layout): weights of both roles, AdamW" in err
    )
    recorded = yaml.safe_load((out / "config.yaml").read_text())["init_from"]
    assert recorded == {"checkpoint": str(ckpt), "step": 1, "state": True}
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert first["step"] == 0 and first["step/updates"] == 1
    assert first["proposer/lr"] == 1e-5 and first["solver/lr"] == 3e-5  # this config's, not the checkpoint's
    assert first["proposer/grad_norm"] > 0 and first["solver/grad_norm"] > 0
    for role in ROLES:
        mine = _pt(out, 1, role)
        assert mine["step"] == 1  # the new run's optimizer steps
        assert {float(s["step"]) for s in mine["optimizer"]["state"].values()} == {2.0}  # AdamW's continue
        before = _pt(run_a, 1, role)["model"]
        assert any(not torch.equal(mine["model"][k], before[k]) for k in before)
    # the forked run is an ordinary run: it resumes (its record unchanged)
    assert main(["train", "--resume", str(out), "run.max_steps=2"]) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert yaml.safe_load((out / "config.yaml").read_text())["init_from"]["step"] == 1


def test_refusals_are_one_line(run_a, tmp_path, capsys):
    ckpt = str(_ckpt(run_a, 1))
    toy = ["train", str(TOY_CFG), f"run.out_dir={tmp_path / 'B'}", *QUIET]
    _one_line_error(capsys, [*toy, "--init-state"], "--init-state goes with --init-from")
    _one_line_error(capsys, ["train", "--resume", str(run_a), "--init-from", ckpt], "give only one of them")
    _one_line_error(capsys, [*toy, "--init-from", str(run_a)], "is a run directory", "latest: ")
    _one_line_error(capsys, [*toy, "--init-from", str(tmp_path)], "is not a training checkpoint")
    # the checkpoint inside the new run's directory (--overwrite would delete it first)
    inside = ["train", str(TOY_CFG), f"run.out_dir={run_a}", *QUIET, "--overwrite", "--init-from", ckpt]
    _one_line_error(capsys, inside, "lies inside run.out_dir")
    assert (_ckpt(run_a, 1) / "COMPLETE").is_file()
    # another architecture (the tiny models): named, and nothing is left behind
    tiny = ["train", str(TINY_CFG), f"run.out_dir={tmp_path / 'T'}", *QUIET, "--init-from", ckpt]
    _one_line_error(capsys, tiny, "does not fit this run's model (model.name_or_path)", "state_dict")
    assert not (tmp_path / "T").exists()
    # LoRA adapters cannot start from full weights
    lora = [*toy, "model.lora.roles=[solver]", "--init-from", ckpt]
    _one_line_error(capsys, lora, "trains LoRA adapters for the solver", "pasodoble export")
    assert not (tmp_path / "B").exists()


def test_a_layout_the_optimizer_state_cannot_load_into_is_refused(run_a):
    cfg = load_config(TOY_CFG, ["init_from.state=true", f"init_from.checkpoint={_ckpt(run_a, 1)}", *QUIET])
    fork = open_fork(cfg)
    check_layout(fork, "ddp", 2)  # one process and DDP interchange
    with pytest.raises(
        UserError, match=r"distributed.strategy=none on 1 process and this run uses fsdp2 on 2"
    ):
        check_layout(fork, "fsdp2", 2)
    check_layout(replace(fork, state=False), "fsdp2", 2)  # weights only: any layout
    ds = replace(fork, checkpoint_state={"layout": {"strategy": "deepspeed_zero2", "processes": 2}})
    check_layout(ds, "deepspeed_zero2", 2)
    with pytest.raises(
        UserError, match=r"deepspeed_zero2 on 2 processes and this run uses deepspeed_zero2 on 4"
    ):
        check_layout(ds, "deepspeed_zero2", 4)
    fsdp = replace(fork, checkpoint_state={"layout": {"strategy": "fsdp2", "processes": 2}})
    check_layout(fsdp, "fsdp2", 4)  # DCP reshards


# --------------------------------------------------------------------------------------------------
# Other layouts: FSDP2 and DeepSpeed (2 CPU processes), LoRA


def _scripted_run(out: Path, *overrides: str, processes: int = 1) -> Path:
    """2 online steps of the tiny config with the scripted backend (workers/run_scripted.py), a checkpoint after each."""
    import socket

    args = ["-m", "tests.integration.workers.run_scripted", str(out), "online", "2", "1", *overrides]
    if processes > 1:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(processes)]
        args = [*launcher, "--master_addr", "127.0.0.1", "--master_port", str(port), *args]
    env = {**ENV, "DS_ACCELERATOR": "cpu", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, timeout=600, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["fsdp2", "deepspeed_zero2"])
def test_sharded_checkpoints_fork_weights_into_one_process(strategy, tmp_path, capsys):
    if strategy == "deepspeed_zero2":
        pytest.importorskip("deepspeed")
    run = _scripted_run(tmp_path / "run", f"distributed.strategy={strategy}", "run.device=cpu", processes=2)
    ckpt = _ckpt(run, 1)
    exported = {}
    for role in ROLES:  # the export path's reading of the layout (tested against the layout's own reader)
        assert main(["export", str(ckpt), "--role", role, "--out", str(tmp_path / role)]) == 0
        exported[role] = load_file(tmp_path / role / "model.safetensors")
    cfg = load_config(
        TINY_CFG, [f"run.out_dir={tmp_path / 'B'}", *QUIET, "run.seed=3", f"init_from.checkpoint={ckpt}"]
    )
    trainer = Trainer(cfg, tmp_path / "B", resume=False, fork=open_fork(cfg))
    try:
        for role in (trainer.engine.proposer, trainer.engine.solver):
            now = role.learner.unwrapped_model.state_dict()
            assert all(torch.equal(now[k], v) for k, v in exported[role.name].items())
    finally:
        trainer.close()
    capsys.readouterr()
    args = ["train", str(TINY_CFG), f"run.out_dir={tmp_path / 'C'}", *QUIET, "--init-from", str(ckpt)]
    _one_line_error(capsys, [*args, "--init-state"], f"distributed.strategy={strategy} on 2 processes")


TOY_MODELS = [
    f"model.name_or_path={TOY / 'base'}",
    f"proposer.model_path={TOY / 'proposer_cold_start'}",
    f"solver.model_path={TOY / 'solver_cold_start'}",
    "rollout.max_new_tokens=48",
]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory) -> Path:
    """The toy models, the Solver trained as LoRA adapters (rank 4), the Proposer in full weights."""
    pytest.importorskip("peft")
    out = tmp_path_factory.mktemp("lora") / "run"
    return _scripted_run(out, *TOY_MODELS, "model.lora.roles=[solver]", "model.lora.rank=4")


@pytest.mark.slow
def test_adapter_only_export_loads_with_peft_onto_the_base(lora_run, tmp_path, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ckpt = _ckpt(lora_run, 2)
    out = tmp_path / "adapters"
    assert main(["export", str(ckpt), "--role", "solver", "--out", str(out), "--adapter-only"]) == 0
    assert "LoRA adapters only" in capsys.readouterr().out
    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= names
    assert not names & {"model.safetensors", "config.json", "tokenizer.json"}
    adapter_cfg = json.loads((out / "adapter_config.json").read_text())
    assert adapter_cfg["base_model_name_or_path"] == str((TOY / "solver_cold_start").resolve())
    assert adapter_cfg["r"] == 4
    saved = load_file(out / "adapter_model.safetensors")
    assert len(saved) == len(_pt(lora_run, 2, "solver")["model"])  # the adapters, nothing of the base
    # float32, as training held it (the toy model's config names another dtype, which from_pretrained would pick)
    base = AutoModelForCausalLM.from_pretrained(adapter_cfg["base_model_name_or_path"], dtype=torch.float32)
    loaded = PeftModel.from_pretrained(base, out).merge_and_unload().state_dict()
    assert main(["export", str(ckpt), "--role", "solver", "--out", str(tmp_path / "merged")]) == 0
    merged = load_file(tmp_path / "merged" / "model.safetensors")
    start = load_file(TOY / "solver_cold_start" / "model.safetensors")
    assert all(torch.equal(loaded[k], merged[k]) for k in merged)  # peft's merge of the adapters = export's
    assert any(not torch.equal(merged[k], start[k].to(merged[k].dtype)) for k in start)  # they moved
    capsys.readouterr()
    refused = ["export", str(ckpt), "--role", "proposer", "--out", str(tmp_path / "p"), "--adapter-only"]
    _one_line_error(capsys, refused, "--adapter-only", "holds full weights, not LoRA adapters")
    assert not (tmp_path / "p").exists()


@pytest.mark.slow
def test_lora_checkpoints_fork_into_adapters_or_merged_weights(lora_run, tmp_path, capsys):
    run, toy = lora_run, TOY_MODELS
    ckpt = _ckpt(run, 2)
    adapters = _pt(run, 2, "solver")["model"]
    assert any(torch.count_nonzero(v) for k, v in adapters.items() if "lora_B" in k)  # trained
    base = [f"run.out_dir={tmp_path / 'B'}", *QUIET, "run.seed=11", *toy, f"init_from.checkpoint={ckpt}"]
    # into the same adapters (another seed: the A matrices would differ if not loaded), with their AdamW state
    cfg = load_config(
        TINY_CFG, [*base, "model.lora.roles=[solver]", "model.lora.rank=4", "init_from.state=true"]
    )
    trainer = Trainer(cfg, tmp_path / "B", resume=False, fork=open_fork(cfg))
    try:
        from pasodoble import lora

        mine = lora.adapter_state_dict(trainer.engine.solver.learner.peft_model)
        assert mine.keys() == adapters.keys() and all(torch.equal(mine[k], adapters[k]) for k in adapters)
        assert len(trainer.engine.solver.learner.optimizer.state) == len(adapters)
    finally:
        trainer.close()
    # into full weights: the merged model, equal to what export writes
    assert main(["export", str(ckpt), "--role", "solver", "--out", str(tmp_path / "merged")]) == 0
    merged = load_file(tmp_path / "merged" / "model.safetensors")
    cfg = load_config(TINY_CFG, [*base, f"run.out_dir={tmp_path / 'C'}"])
    trainer = Trainer(cfg, tmp_path / "C", resume=False, fork=open_fork(cfg))
    try:
        now = trainer.engine.solver.learner.unwrapped_model.state_dict()
        assert all(torch.equal(now[k], merged[k]) for k in merged)
    finally:
        trainer.close()
    capsys.readouterr()
    args = ["train", str(TINY_CFG), f"run.out_dir={tmp_path / 'D'}", *QUIET, *toy, "--init-from", str(ckpt)]
    _one_line_error(capsys, [*args, "--init-state"], "AdamW state", "LoRA adapters", "model.lora.roles")
    _one_line_error(
        capsys, [*args, "model.lora.roles=[solver]", "model.lora.rank=8"], "model.lora.rank (4 -> 8)"
    )


def test_a_knowledge_base_that_differs_is_not_carried_and_the_start_up_line_says_so(run_a, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "".join(json.dumps({"text": f"Tom has {i} apples and buys {i + 2} more."}) + "\n" for i in range(8))
    )
    trainer, fork = _trainer(
        tmp_path / "B", _ckpt(run_a, 1), "init_from.state=true", f"knowledge.source={corpus}"
    )
    try:
        assert trainer.engine.knowledge.position == 0  # this run's own corpus, from its start
        assert len(trainer.engine.diversity.state_dict()["history"]) > 0  # the rest is carried
        assert len(trainer.engine.proposer.learner.optimizer.state) > 0
    finally:
        trainer.close()
    line = fork.describe()
    assert "AdamW states, question buffer, diversity history;" in line
    assert "not carried: knowledge position (the checkpoint's has source 'toy' but this run's has" in line
