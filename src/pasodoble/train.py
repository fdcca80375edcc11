"""The outer loop: build both roles, run online steps or offline phases, log, checkpoint, resume.

``run_training(cfg)`` starts a run in ``cfg.run.out_dir``; ``resume_training(run_dir)`` continues the
run from its newest complete checkpoint, restoring everything the run depends on (both learners,
RNG states, step and skip counters, diversity history, question buffer, knowledge position, log
offsets), so that a resumed run is bitwise identical to an uninterrupted one. A first SIGINT/SIGTERM
finishes the current step, writes a checkpoint and returns normally; a second Ctrl-C aborts at once.
A run holds a lock on its directory (``rundir.RunLock``) from start to end.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from pasodoble import distributed as dist
from pasodoble import lora
from pasodoble.checkpoint import (
    latest_checkpoint,
    load_rng,
    read_checkpoint_state,
    save_collective,
    verify_checkpoint,
    write_error,
)
from pasodoble.config import (
    Config,
    check_computing_fields,
    computing_fields,
    config_from_dict,
    resume_overrides,
    save_config,
    total_steps,
    validate,
    validate_resumed,
)
from pasodoble.diversity import DiversityHistory
from pasodoble.dual_play import DualPlay, Role, StepResult
from pasodoble.errors import UserError
from pasodoble.fork import ForkSource, check_layout, init_state, init_weights, open_fork
from pasodoble.knowledge import KnowledgeBase
from pasodoble.learner import Learner
from pasodoble.metrics import RunLogger
from pasodoble.models import load_model_and_tokenizer, progress_bars, set_cpu_threads
from pasodoble.parallel import GenerationReplica, ReplicaBackend, build_accelerator, init_processes
from pasodoble.plugins import StepEvent, load_callable
from pasodoble.question_buffer import QuestionBuffer
from pasodoble.rollout import make_backend
from pasodoble.rundir import (
    LOCK,
    MARKER,
    RunLock,
    check_out_dir,
    check_shared_filesystem,
    check_writable,
    clear_run_dir,
    remove_unstarted_run,
    write_marker,
)
from pasodoble.tasks import get_task
from pasodoble.topology import engine_context_length, validate_topology


@dataclass
class Counters:
    """Step bookkeeping saved in every checkpoint."""

    step: int = 0  # steps done (skipped ones included)
    updates: int = 0  # steps that trained at least one role
    skips: int = 0


def phase_of(cfg: Config, step: int) -> str:
    """Which kind of step ``step`` (0-based) is: online, offline_proposer or offline_solver."""
    if cfg.run.mode == "online":
        return "online"
    k_p, k_s = cfg.proposer.updates_per_phase, cfg.solver.updates_per_phase
    return "offline_proposer" if step % (k_p + k_s) < k_p else "offline_solver"


def _on_cpu(cfg: Config) -> bool:
    return cfg.run.device == "cpu" or (cfg.run.device == "auto" and not torch.cuda.is_available())


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class Trainer:
    """Owns the engine and the run directory; ``run()`` executes the schedule."""

    def __init__(
        self,
        cfg: Config,
        run_dir: Path,
        *,
        resume: bool,
        backend_factory=None,
        relabel=None,
        lock: RunLock | None = None,
        fork: ForkSource | None = None,
    ) -> None:
        """``backend_factory(role, model, tokenizer) -> RolloutBackend`` replaces the configured backend;
        ``relabel`` is ``DualPlay``'s diagnostic answer override (None in every normal run); ``lock``
        is the run directory's lock when the caller took it already (main process; released by close);
        ``fork`` is the checkpoint a new run starts from (``fork.open_fork``; ``init_from`` in the config)."""
        self.cfg = cfg
        # run.callbacks (plugins.StepCallback), on the main process
        self.callbacks = (
            [load_callable(spec, f"run.callbacks[{i}]") for i, spec in enumerate(cfg.run.callbacks)]
            if dist.is_main()
            else []
        )
        self.relabel = relabel
        self.backend_factory = backend_factory
        self.run_dir = run_dir
        self._stop_signal: int | None = None
        self._replica: GenerationReplica | None = None
        validate_topology(cfg)  # placement, batch sizes and memory: refuse before anything loads
        seed_everything(cfg.run.seed)
        self.accelerator, self.parallelism = build_accelerator(
            cfg.distributed.strategy, cfg.model.dtype, cpu=_on_cpu(cfg)
        )
        self.fork = fork
        if fork is not None:  # --init-state into a layout its optimizer state cannot load into: refused here
            check_layout(fork, self.parallelism.strategy, self.parallelism.num_processes)
        self.lock = lock
        if dist.is_main():
            run_dir.mkdir(parents=True, exist_ok=True)
            if self.lock is None:
                self.lock = RunLock(run_dir).acquire()
                self.lock.record()
            write_marker(run_dir)
            if not resume:
                save_config(cfg, run_dir / "config.yaml")
        check_shared_filesystem(run_dir)  # several processes (nodes) must all see run.out_dir
        self.engine = self._build()
        if fork is not None and fork.state:
            init_state(fork, self.engine)
        self._eval_benchmarks: list | None = None
        self.counters = Counters()
        self.logger = RunLogger(
            run_dir,
            enabled=dist.is_main(),
            trackers=cfg.run.log_with,
            tensorboard=cfg.run.tensorboard,
            wandb_project=cfg.run.wandb_project,
            project=cfg.run.project,
            run_name=cfg.run.name,
            config=cfg.to_dict(),
            resume=resume,
        )

    # ------------------------------------------------------------------ construction

    def _role(self, name: str, tokenizer_holder: list) -> Role:
        cfg = self.cfg
        spec = cfg.role(name)
        role_cfg = spec.section
        adapters = name in cfg.model.lora.roles
        if adapters:  # refused layouts and a missing peft stop before any model loads
            lora.check_available()
            lora.check_layout(self.parallelism.strategy, self.parallelism.num_processes)
        # float32 master weights; model.dtype is the compute dtype (parallel.py)
        model, tokenizer = load_model_and_tokenizer(
            spec.model_path,
            cfg.model,
            seed=cfg.run.seed,
            dtype="float32",
            field=spec.model_field,
            progress=cfg.run.progress,
        )
        if adapters:  # the learner trains the adapters only; generation sees the adapted model
            model = lora.wrap(model, cfg.model.lora, role=name)
        if self.fork is not None and not self.fork.state:  # a forked run: the checkpoint's weights
            init_weights(self.fork, name, model, cfg)
        if not tokenizer_holder:
            tokenizer_holder.append(tokenizer)
        par = self.parallelism
        replica = None
        if par.sharded and self.backend_factory is None and cfg.rollout.backend != "vllm":
            # decode loops cannot run through sharded modules: one full replica per process, both roles
            if self._replica is None:
                self._replica = GenerationReplica(model, par.compute_dtype, self.accelerator.device)
            replica = self._replica
        temperature, max_new = spec.temperature, spec.max_new_tokens
        learner = Learner(
            name,
            model,
            tokenizer,
            role_cfg,
            cfg.grpo,
            self.accelerator,
            temperature=temperature,
            max_new_tokens=max_new,
            total_steps=self._optimizer_steps(name),
            gradient_checkpointing=cfg.model.gradient_checkpointing,
            parallelism=par,
        )
        if self.backend_factory is not None:
            backend = self.backend_factory(name, learner.unwrapped_model, tokenizer)
        else:
            backend = make_backend(
                cfg.rollout.backend,
                replica.model if replica is not None else learner.unwrapped_model,
                tokenizer,
                generation_batch_size=cfg.rollout.generation_batch_size,
                compute_dtype=par.compute_dtype,
                role=name,
                vllm_cfg=cfg.vllm,
                engine_dtype=cfg.model.dtype,
                seed=cfg.run.seed,
                max_model_len=engine_context_length(cfg),
            )
            if replica is not None:
                backend = ReplicaBackend(name, backend, replica, learner.unwrapped_model)
        return Role(name, learner, backend, temperature, max_new)

    def _optimizer_steps(self, name: str) -> int:
        """Optimizer steps this role makes over the whole run (for the cosine schedule's length)."""
        cfg = self.cfg
        role_cfg = getattr(cfg, name)
        updates = (
            cfg.run.max_steps if cfg.run.mode == "online" else cfg.run.max_steps * role_cfg.updates_per_phase
        )
        return updates * role_cfg.steps_per_batch

    def _build(self) -> DualPlay:
        cfg = self.cfg
        tok: list = []
        proposer = self._role("proposer", tok)
        set_cpu_threads(proposer.learner.unwrapped_model, cfg.run.threads or None)
        solver = self._role("solver", tok)
        knowledge = KnowledgeBase(cfg.knowledge, seed=cfg.run.seed)
        grader = get_task(cfg.task.name).make_grader(cfg.grader) if dist.is_main() else None
        return DualPlay(
            cfg,
            tokenizer=tok[0],
            proposer=proposer,
            solver=solver,
            knowledge=knowledge,
            grader=grader,
            diversity=DiversityHistory.from_config(cfg.rewards),
            buffer=QuestionBuffer(cfg.buffer, cfg.rewards),
            relabel=self.relabel,
        )

    # ------------------------------------------------------------------ checkpoints

    def save(self) -> Path:
        """Write a checkpoint of the current step; every process takes part (see checkpoint.py)."""
        e = self.engine

        def write(tmp: Path) -> None:
            e.proposer.learner.save(tmp)
            e.solver.learner.save(tmp)

        def state() -> dict[str, Any]:
            return {
                "counters": vars(self.counters),
                "diversity": e.diversity.state_dict(),
                "buffer": e.buffer.state_dict(),
                "knowledge": e.knowledge.state_dict(),
                "logger": self.logger.state(),
                "layout": {"strategy": self.parallelism.strategy, "processes": dist.world_size()},
                "computing_config": computing_fields(self.cfg),
            }

        try:
            path = save_collective(
                self.run_dir, self.counters.step, write=write, state=state, keep=self.cfg.run.keep_checkpoints
            )
        except Exception as exc:
            error = write_error(
                exc, self.run_dir / "checkpoints", f"the checkpoint of step {self.counters.step} in"
            )
            if error is None:
                raise
            last = latest_checkpoint(self.run_dir)
            kept = f"; the last complete checkpoint, {last.name}, is intact" if last else ""
            raise UserError(f"{error}{kept}") from None
        self._notify(StepEvent("checkpoint", self.counters.step, self.run_dir, path=path))
        return path

    def _notify(self, event: StepEvent) -> None:
        """Call ``run.callbacks`` (main process; they observe, an exception stops the run)."""
        for callback in self.callbacks:
            callback(event)

    def restore(self, path: Path) -> None:
        dist.main_then_broadcast(lambda: verify_checkpoint(path))  # every file against its sha256
        state = read_checkpoint_state(path)["state"]
        e = self.engine
        try:
            e.proposer.learner.load(path)
            e.solver.learner.load(path)
        except (RuntimeError, KeyError, ValueError, FileNotFoundError) as exc:
            raise UserError(
                f"checkpoint {path} does not fit this run's models ({type(exc).__name__}: {str(exc)[:200]})"
            ) from None
        e.proposer.backend.sync_weights(e.proposer.learner.unwrapped_model)
        e.solver.backend.sync_weights(e.solver.learner.unwrapped_model)
        self.counters = Counters(**state["counters"])
        e.diversity.load_state_dict(state["diversity"])
        e.buffer.load_state_dict(state["buffer"])
        e.knowledge.load_state_dict(state["knowledge"])
        self.logger.restore(state["logger"])
        self._truncate_decisions()
        load_rng(path)

    # ------------------------------------------------------------------ held-out evaluation

    def evaluate(self) -> dict[str, Any]:
        """Evaluate the current Solver on ``eval.benchmarks`` (main process); return ``eval/…`` metrics.

        Uses the Solver's own generator and the run's grader; results go to RUN/eval/step_<8-digit step>/
        in the format of ``pasodoble eval`` (results.json, results.md, samples.jsonl).
        """
        # Every process first takes part in any pending weight load of the Solver's generator (a
        # gather under FSDP2, a colocated engine's load); then the main process generates alone.
        self.engine.solver.backend.hold()
        if not dist.is_main():
            return {}
        backend = self.engine.solver.backend.local()
        from pasodoble.eval.benchmarks import load_benchmark
        from pasodoble.eval.runner import BackendGenerator, EvalSettings, run_eval

        cfg, e = self.cfg, self.cfg.eval
        if self._eval_benchmarks is None:
            self._eval_benchmarks = [
                load_benchmark(n, data_dir=e.data_dir, limit=e.limit) for n in e.benchmarks
            ]
        step = self.counters.step
        settings = EvalSettings(
            model=f"{self.run_dir}/solver@step{step}",
            benchmarks=[b.name for b in self._eval_benchmarks],
            samples=e.samples,
            temperature=e.temperature,
            top_p=cfg.rollout.top_p,
            max_new_tokens=e.max_new_tokens,
            solver_prompt=cfg.solver.prompt,
            open_thinking=cfg.rollout.open_thinking,
            seed=cfg.run.seed,
            limit=e.limit,
            data_dir=e.data_dir,
            extract=e.extract,
        )
        generator = BackendGenerator(
            backend,
            self.engine.tokenizer,
            few_shot=0,
            temperature=e.temperature,
            top_p=cfg.rollout.top_p,
            max_new_tokens=e.max_new_tokens,
            max_prompt_tokens=cfg.rollout.max_prompt_tokens,
            template=cfg.solver.prompt,
            open_thinking=cfg.rollout.open_thinking,
        )
        out = self.run_dir / "eval" / f"step_{step:08d}"
        grader = self.engine.grader

        def grade(texts, golds):
            return grader.grade_batch(texts, golds, extract=e.extract)

        results = run_eval(settings, self._eval_benchmarks, generator, grade, out, progress=False)
        metrics: dict[str, Any] = {"eval/step": step}
        for name, values in results["benchmarks"].items():
            metrics[f"eval/{name}/pass@1"] = values["pass@1"]
        metrics["eval/average/pass@1"] = results["average"]["pass@1"]
        return metrics

    # ------------------------------------------------------------------ the loop

    def _on_signal(self, signum, _frame) -> None:
        if self._stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C aborts without a checkpoint
        if self._stop_signal is not None:  # a second SIGTERM: the stop is under way, the exit unchanged
            if dist.is_main():
                print("pasodoble train: SIGTERM again: already stopping", file=sys.stderr, flush=True)
            return
        self._stop_signal = signum
        if dist.is_main():
            name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
            print(
                f"\npasodoble train: {name}: stopping after this step and writing a checkpoint; "
                "press Ctrl-C again to abort",
                file=sys.stderr,
                flush=True,
            )

    def _should_stop(self) -> bool:
        """Stop when any rank got SIGINT/SIGTERM: decided together, so no rank waits alone in a collective."""
        stop = any(dist.gather_list([self._stop_signal is not None]))
        if stop and self._stop_signal is None:
            self._stop_signal = signal.SIGTERM
        return stop

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        total = total_steps(cfg)
        if dist.is_main():  # printed once everything is built: no silent fallback
            print(f"pasodoble train: {self.parallelism.describe()}", file=sys.stderr, flush=True)
            if self.fork is not None:
                print(f"pasodoble train: {self.fork.describe()}", file=sys.stderr, flush=True)
        self._previous_handlers = {
            s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)
        }
        bar = tqdm(
            total=total,
            initial=self.counters.step,
            desc=f"dual-play {cfg.run.mode}",
            unit="step",
            disable=not (cfg.run.progress and dist.is_main()),
            dynamic_ncols=True,
        )
        valid_ema = pass_ema = None
        last_saved = self.counters.step
        try:
            while self.counters.step < total and not self._should_stop():
                step = self.counters.step
                t0 = time.perf_counter()
                phase = phase_of(cfg, step)
                if phase == "online":
                    result = self.engine.online_step(step)
                elif phase == "offline_proposer":
                    result = self.engine.proposer_phase_step(step)
                else:
                    result = self.engine.solver_phase_step(step)
                self.counters.step += 1
                self.counters.updates += int(result.trained)
                self.counters.skips += int(result.skipped is not None)
                if cfg.eval.every and self.counters.step % cfg.eval.every == 0:
                    result.metrics.update(self.evaluate())
                self._log(step, phase, result, time.perf_counter() - t0)
                self._notify(StepEvent("step", step, self.run_dir, result.metrics, result.rollouts))
                vr = result.metrics.get("proposer/valid_rate")
                pr = result.metrics.get("solver/pass_rate")
                valid_ema = vr if valid_ema is None or vr is None else 0.9 * valid_ema + 0.1 * vr
                pass_ema = pr if pass_ema is None or pr is None else 0.9 * pass_ema + 0.1 * pr
                bar.set_postfix(
                    valid=f"{valid_ema:.2f}" if valid_ema is not None else "-",
                    solver_pass=f"{pass_ema:.2f}" if pass_ema is not None else "-",
                    skips=self.counters.skips,
                    refresh=False,
                )
                bar.update(1)
                every = cfg.run.checkpoint_every
                if every and self.counters.step % every == 0 and self.counters.step < total:
                    self.save()
                    last_saved = self.counters.step
            # decided on the main process: other nodes may not see the run directory's files
            if dist.broadcast(self.counters.step != last_saved or latest_checkpoint(self.run_dir) is None):
                self.save()
        finally:
            bar.close()
            # the handlers stay until close(): a SIGTERM during the rest of the shutdown (the final models,
            # closing trackers and grader workers) is acknowledged, not fatal, after the checkpoint
        interrupted = self._stop_signal is not None
        if not interrupted:  # collective: every rank takes part, the main process writes
            for role in (self.engine.proposer, self.engine.solver):
                final = self.run_dir / f"{role.name}_final"
                try:
                    with progress_bars(self.cfg.run.progress):  # transformers' "Writing model shards"
                        role.learner.save_pretrained(final)
                except Exception as exc:
                    error = write_error(exc, final, "the final model")
                    if error is None:
                        raise
                    raise UserError(
                        f"{error}; the checkpoint of step {self.counters.step} is complete"
                    ) from None
        return {
            "steps": self.counters.step,
            "updates": self.counters.updates,
            "skips": self.counters.skips,
            "interrupted": interrupted,
        }

    def _log(self, step: int, phase: str, result: StepResult, seconds: float) -> None:
        metrics = {
            "phase": phase,
            "step/skipped": int(result.skipped is not None),
            "step/skip_reason": result.skipped,
            "step/updates": self.counters.updates,
            "step/skips_total": self.counters.skips,
            **result.metrics,
            "time/step": seconds,
        }
        if step % self.cfg.run.log_every == 0:
            self.logger.log_metrics(step, metrics)
        self.logger.log_rollouts(result.rollouts)
        self._log_decisions(step, result)

    def _decisions_path(self) -> Path:
        return self.run_dir / f"decisions.rank{dist.rank()}.jsonl"

    def _log_decisions(self, step: int, result: StepResult) -> None:
        """With several processes, every rank writes the decisions it trained on, one line per step
        (``decisions.rankR.jsonl``), so anyone can check that the ranks agree."""
        if dist.world_size() == 1:
            return
        record = {
            "step": step,
            "skipped": result.skipped,
            "trained": result.trained,
            "proposer_reward": [r.get("proposer_reward") for r in result.rollouts],
            "proposer_advantage": [r.get("proposer_advantage") for r in result.rollouts],
            "pass_rate": [r.get("pass_rate") for r in result.rollouts],
            "solver_trained": [r.get("solver_trained") for r in result.rollouts],
        }
        with open(self._decisions_path(), "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    def _truncate_decisions(self) -> None:
        """On resume: drop decision lines of steps after the checkpoint (they are redone)."""
        path = self._decisions_path()
        if dist.world_size() == 1 or not path.exists():
            return
        keep = [ln for ln in path.read_text().splitlines() if json.loads(ln)["step"] < self.counters.step]
        path.write_text("".join(ln + "\n" for ln in keep))

    def close(self) -> None:
        for s, handler in getattr(self, "_previous_handlers", {}).items():
            signal.signal(s, handler)
        self._previous_handlers = {}
        self.logger.close()
        self.engine.proposer.backend.close()
        self.engine.solver.backend.close()
        if self.engine.grader is not None:
            self.engine.grader.close()
        if self.lock is not None:
            self.lock.release()


def run_training(
    cfg: Config, *, backend_factory=None, overwrite: bool = False, relabel=None
) -> dict[str, Any]:
    """Start a new run in ``cfg.run.out_dir``.

    The directory must be new or empty. ``overwrite`` first deletes an earlier run there, and only
    what the trainer writes (``rundir.clear_run_dir``); a directory holding anything else is refused.
    ``cfg`` is validated first, as a config file is (a Config changed in Python included).
    """
    validate(cfg)
    run_dir = Path(cfg.run.out_dir).expanduser()
    cfg.run.out_dir = str(run_dir)
    init_processes(cpu=_on_cpu(cfg))  # so that only the main process checks and locks the directory
    fork = open_fork(cfg)  # init_from: the checkpoint is checked (and recorded in cfg) before anything else
    lock: RunLock | None = None
    created = False  # the run made run_dir: a run that fails to start removes it again

    def check() -> None:
        nonlocal lock, created
        check_out_dir(run_dir)
        check_writable(run_dir, "run.out_dir")
        created = not run_dir.exists()
        lock = RunLock(run_dir).acquire()  # held from here to the end of the run; writes nothing
        if overwrite:
            clear_run_dir(run_dir, locked=True)
        # a .lock of our own sits next to our marker; one without it is the user's file
        if any(p.name != LOCK or not (run_dir / MARKER).exists() for p in run_dir.iterdir()):
            if latest_checkpoint(run_dir) is not None:
                raise UserError(
                    f"{run_dir} already holds a run with checkpoints; continue it with "
                    f"`pasodoble train --resume {run_dir}`, replace it with --overwrite, or choose "
                    "another run.out_dir"
                )
            raise UserError(
                f"run.out_dir={run_dir} is not empty; choose another run.out_dir, or pass --overwrite to "
                "replace an earlier run there"
            )
        lock.record()  # accepted: from here the directory is this run's

    try:
        dist.main_then_broadcast(check)
    except BaseException:
        if lock is not None:
            lock.release()
        if created and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()
        raise
    try:
        trainer = Trainer(
            cfg, run_dir, resume=False, backend_factory=backend_factory, relabel=relabel, lock=lock, fork=fork
        )
    except BaseException:
        # a run that never started leaves nothing behind: what it wrote goes (the directory was empty)
        if dist.is_main() and run_dir.is_dir():
            remove_unstarted_run(run_dir, remove_directory=created)
        if lock is not None:
            lock.release()
        raise
    with contextlib.closing(trainer):
        return trainer.run()


def resume_training(
    run_dir: str | Path, overrides: list[str] | None = None, *, backend_factory=None
) -> dict[str, Any]:
    """Continue the run in ``run_dir`` from its newest complete checkpoint.

    ``overrides`` may change only operational fields (``RESUME_OVERRIDES``); what was applied is printed.
    """
    run_dir = Path(run_dir).expanduser()
    cfg_path = run_dir / "config.yaml"
    if run_dir.is_dir() and cfg_path.is_file():
        check_writable(run_dir, "--resume")
    if not cfg_path.is_file():
        raise UserError(f"{run_dir} is not a run directory (no config.yaml)")
    try:
        data = yaml.safe_load(cfg_path.read_text())
    except yaml.YAMLError:
        raise UserError(f"{cfg_path} is not valid YAML") from None
    # validated after the overrides: one may repair a value this version refuses (grader.timeout_s=inf)
    cfg = config_from_dict(data, check=False)
    if not overrides:
        validate_resumed(cfg, cfg_path)
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise UserError(f"{run_dir} has no complete checkpoint to resume from")
    init_processes(cpu=_on_cpu(cfg))
    lock = RunLock(run_dir).acquire() if dist.is_main() else None  # refused while the run still goes
    try:
        if lock is not None:
            lock.record()
        ckpt_state = read_checkpoint_state(ckpt)["state"]
        check_computing_fields(cfg, ckpt_state.get("computing_config"), cfg_path)
        reached = int(ckpt_state["counters"]["step"])
        applied = resume_overrides(cfg, overrides, reached) if overrides else []
        validate_resumed(cfg, cfg_path)
        if applied and dist.is_main():
            print(f"pasodoble train --resume: applied {', '.join(applied)}", file=sys.stderr, flush=True)
        cfg.run.out_dir = str(run_dir)
        trainer = Trainer(cfg, run_dir, resume=True, backend_factory=backend_factory, lock=lock)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    with contextlib.closing(trainer):
        trainer.restore(ckpt)
        if dist.is_main() and applied:
            save_config(cfg, run_dir / "config.yaml")
        return trainer.run()
