"""Can the GRPO learner improve the toy cold-start Solver at all? Solver-only runs with perfect rewards.

    .venv/bin/python benchmarks/toy_rl_probe.py --model runs/toy/solver_cold_start --steps 40 \\
        --run grpo-1e-5:lr=1e-5 --run grpo-1e-4:lr=1e-4 --run sft-1e-4:mode=sft,lr=1e-4

Dual-play can only lift the Solver if an RL update with *right* labels does, within the demo's
budget. This script isolates that question from the Proposer: each step draws ``questions`` fresh
canonical problems (never the held-out or validation ones), samples ``samples`` Solver answers per
problem at the demo's temperature, rewards each with its exact correctness (the toy generator's
value: this is a diagnosis, not PasoDoble), and makes one ``Learner.update`` with GRPO advantages on
the groups that are neither all right nor all wrong (the demo's band). Every ``--eval-every`` steps it
measures pass@1 (``--eval-samples`` samples at the same temperature, one fixed seed) on the first
``--eval-problems`` validation problems of the toy build, and the share of worked-style answers.

Every ``--run NAME:key=value,...`` starts from the same model, problem stream and evaluation set, so
the rows of the printed table compare side by side. Keys (default in brackets): ``mode`` [grpo]
(``grpo``; ``positive``: only positive advantages; ``sft``: the true worked solutions with advantage
1, i.e. plain supervised steps through the same learner), ``lr`` [1e-5], ``questions`` [16],
``samples`` [8], ``schedule`` [constant] (or ``cosine`` over the run), ``warmup`` [0],
``steps_per_batch`` [1], ``beta`` [0], ``advantage_norm`` [group], ``loss`` [dr_grpo].
Results: OUT/results.json and OUT/results.md.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

MODES = ("grpo", "positive", "sft")


@dataclass
class ProbeRun:
    name: str
    mode: str = "grpo"
    lr: float = 1e-5
    questions: int = 16
    samples: int = 8
    schedule: str = "constant"
    warmup: int = 0
    steps_per_batch: int = 1
    beta: float = 0.0
    advantage_norm: str = "group"
    loss: str = "dr_grpo"


def parse_run(spec: str) -> ProbeRun:
    """``NAME:key=value,key=value`` → ProbeRun (a bad key or value exits with a one-line message)."""
    name, _, rest = spec.partition(":")
    run = ProbeRun(name=name or spec)
    fields = ProbeRun.__dataclass_fields__
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in fields or key == "name":
            raise SystemExit(f"--run {spec!r}: unknown setting {item!r}; keys: {', '.join(list(fields)[1:])}")
        kind = type(getattr(run, key))
        try:
            setattr(run, key, kind(value))
        except ValueError:
            raise SystemExit(f"--run {spec!r}: {key} needs a {kind.__name__}; got {value!r}") from None
    if run.mode not in MODES:
        raise SystemExit(f"--run {spec!r}: mode must be one of {', '.join(MODES)}; got {run.mode!r}")
    return run


def probe(run: ProbeRun, args, validation, train_problems) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from pasodoble.config import GRPOConfig, RoleConfig
    from pasodoble.grpo import group_advantages
    from pasodoble.learner import Learner, TrainSample
    from pasodoble.models import load_tokenizer
    from pasodoble.rollout.base import SamplingParams
    from pasodoble.rollout.hf import HFBackend
    from pasodoble.toy.accuracy import boxed_int_correct, solver_prompt_ids, toy_solver_eval
    from pasodoble.toy.build import DEMO_TEMPERATURE
    from pasodoble.toy.corpus import worked_solution
    from pasodoble.toy.family import parse_canonical

    torch.manual_seed(args.seed)
    tok = load_tokenizer(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    learner = Learner(
        "solver",
        model,
        tok,
        RoleConfig(
            learning_rate=run.lr,
            lr_schedule=run.schedule,
            warmup_steps=run.warmup,
            steps_per_batch=run.steps_per_batch,
            micro_batch_size=64,
        ),
        GRPOConfig(loss_type=run.loss, beta=run.beta, advantage_norm=run.advantage_norm),
        temperature=DEMO_TEMPERATURE,
        max_new_tokens=args.max_new_tokens,
        total_steps=args.steps * run.steps_per_batch,
    )
    policy = learner.unwrapped_model
    backend = HFBackend(policy, tok, generation_batch_size=128)
    eos = tok.eos_token_id  # the chat template's end of turn (<|im_end|>), which ends every answer

    def evaluation(step: int) -> dict:
        policy.eval()
        result = toy_solver_eval(
            policy, tok, validation, temperature=DEMO_TEMPERATURE, seed=0, samples=args.eval_samples
        )
        return {"step": step, "accuracy": result["accuracy"], "worked_share": result["worked_share"]}

    curve = [evaluation(0)]
    print(
        f"[{run.name}] step 0: {100 * curve[0]['accuracy']:.2f}% "
        f"(worked share {100 * curve[0]['worked_share']:.1f}%)",
        flush=True,
    )
    started = time.perf_counter()
    for step in range(args.steps):
        batch = train_problems[step * run.questions : (step + 1) * run.questions]
        prompts = solver_prompt_ids(tok, batch)
        samples: list[TrainSample] = []
        pass_rates = []
        if run.mode == "sft":
            for p, ids in zip(batch, prompts, strict=True):
                solution = worked_solution(parse_canonical(p["problem"]), boxed=True)
                completion = tok(solution, add_special_tokens=False).input_ids + [eos]
                samples.append(TrainSample(ids, completion, 1.0))
        else:
            policy.eval()
            params = SamplingParams(
                temperature=DEMO_TEMPERATURE, max_new_tokens=args.max_new_tokens, n=run.samples, seed=step
            )
            for p, group in zip(batch, backend.generate(prompts, params), strict=True):
                rewards = [float(boxed_int_correct(c.text, p["answer"])) for c in group]
                pass_rates.append(sum(rewards) / len(rewards))
                if not 0 < sum(rewards) < len(rewards):
                    continue
                adv = group_advantages(rewards, len(rewards), norm=run.advantage_norm).tolist()
                if run.mode == "positive":
                    adv = [max(0.0, a) for a in adv]
                samples += [
                    TrainSample(c.prompt_ids, c.completion_ids, a, truncated=c.finish_reason == "length")
                    for c, a in zip(group, adv, strict=True)
                ]
        if len(samples) >= run.steps_per_batch:
            policy.train()
            learner.update(samples)
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            curve.append(evaluation(step + 1))
            rate = f", batch pass rate {sum(pass_rates) / len(pass_rates):.2f}" if pass_rates else ""
            print(
                f"[{run.name}] step {step + 1}: {100 * curve[-1]['accuracy']:.2f}% "
                f"(worked share {100 * curve[-1]['worked_share']:.1f}%){rate} "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    return {
        "run": run.__dict__,
        "curve": curve,
        "change_points": 100 * (curve[-1]["accuracy"] - curve[0]["accuracy"]),
        "seconds": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="Solver model directory (default: the demo's cold start)")
    ap.add_argument("--run", action="append", default=[], metavar="NAME:key=value,...")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--eval-problems", type=int, default=200)
    ap.add_argument("--eval-samples", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--out", default="runs/toy-rl-probe")
    args = ap.parse_args(argv)
    runs = [parse_run(s) for s in args.run] or [parse_run("grpo-1e-5:lr=1e-5")]
    import torch

    from pasodoble.toy.build import BuildSettings, evaluation_sets
    from pasodoble.toy.family import sample_problems

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model is None:
        from pasodoble.toy.demo import models_dir

        args.model = str(models_dir() / "solver_cold_start")
    _, validation, exclude = evaluation_sets(BuildSettings())
    validation = validation[: args.eval_problems]
    need = max(r.questions for r in runs) * args.steps
    train_problems = [p for p in sample_problems(need + len(exclude), 4242) if p["problem"] not in exclude][
        :need
    ]
    results = [probe(run, args, validation, train_problems) for run in runs]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"model": args.model, "results": results}, indent=2) + "\n")
    steps = [p["step"] for p in results[0]["curve"]]
    lines = [
        f"# Toy RL probe: Solver pass@1 (%) on {len(validation)} validation problems × {args.eval_samples} samples",
        "",
        "| run | "
        + " | ".join(f"step {s}" for s in steps)
        + " | change (points) | worked share % | seconds |",
        "| --- |" + " --- |" * (len(steps) + 3),
    ]
    for r in results:
        cells = " | ".join(f"{100 * p['accuracy']:.2f}" for p in r["curve"])
        share = f"{100 * r['curve'][0]['worked_share']:.1f} → {100 * r['curve'][-1]['worked_share']:.1f}"
        lines.append(
            f"| {r['run']['name']} | {cells} | {r['change_points']:+.2f} | {share} | {r['seconds']:.0f} |"
        )
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
