"""The demo's ``summary.json``, ``report.md`` and PNG plots, from the run's own files.

Reads ``RUN/metrics.jsonl`` (one record per step) and the held-out evaluations (the cold start and
the final Solver on all 500 problems, and the in-training ones in ``RUN/eval/step_*/results.json``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PLOTS = {
    "accuracy.png": "Solver held-out accuracy vs step",
    "valid_rate.png": "Valid-question rate",
    "pass_rate.png": "Mean Solver pass rate on the Proposer's questions",
    "proposer_reward.png": "Proposer reward",
    "diversity.png": "Proposer diversity",
}
SERIES = {
    "valid_rate.png": "proposer/valid_rate",
    "pass_rate.png": "solver/pass_rate",
    "proposer_reward.png": "proposer/reward_mean",
    "diversity.png": "proposer/diversity_mean",
}


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def eval_points(run_dir: Path) -> list[tuple[int, float]]:
    """(step, pass@1) of the in-training evaluations, by step."""
    points = []
    for path in sorted((run_dir / "eval").glob("step_*/results.json")):
        step = int(path.parent.name.split("_")[1])
        points.append((step, float(json.loads(path.read_text())["average"]["pass@1"])))
    return points


def mean_of(records: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in records if isinstance(r.get(key), (int, float))]
    return sum(values) / len(values) if values else None


def smoothed(xs: list[int], ys: list[float], window: int = 10) -> tuple[list[int], list[float]]:
    out = []
    for i in range(len(ys)):
        part = ys[max(0, i - window + 1) : i + 1]
        out.append(sum(part) / len(part))
    return xs, out


def write_plots(
    out: Path, records: list[dict[str, Any]], curve: list[tuple[int, float, str]], title: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for kind, marker in (("full", "o"), ("subset", "x")):
        pts = [(s, 100 * a) for s, a, k in curve if k == kind]
        if pts:
            label = "500 held-out problems x 4 samples" if kind == "full" else "in-training check (subset)"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=label)
    ax.set_xlabel("dual-play step")
    ax.set_ylabel("held-out pass@1 (%)")
    ax.set_title(f"{PLOTS['accuracy.png']} ({title})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out / "accuracy.png", dpi=110)
    plt.close(fig)
    for name, key in SERIES.items():
        pts = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        if pts:
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            ax.plot(xs, ys, alpha=0.3, lw=0.8, label="per step")
            ax.plot(*smoothed(xs, ys), lw=1.6, label="mean of 10 steps")
            ax.legend(fontsize="small")
        ax.set_xlabel("dual-play step")
        ax.set_ylabel(key)
        ax.set_title(f"{PLOTS[name]} ({title})")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)


def write_demo_report(
    out: Path,
    run_dir: Path,
    *,
    accuracy_before: float,
    accuracy_after: float,
    steps: int,
    wall_time_s: float,
    train_time_s: float,
    seed: int,
    ablation: str | None,
    label: str | None = None,
) -> dict[str, Any]:
    records = read_metrics(run_dir)
    trained = [r for r in records if not r.get("step/skipped")]
    summary = {
        "accuracy_before": round(accuracy_before, 4),
        "accuracy_after": round(accuracy_after, 4),
        "gain_points": round(100 * (accuracy_after - accuracy_before), 2),
        "steps": steps,
        "valid_question_rate": _round(mean_of(records, "proposer/valid_rate")),
        "mean_pass_rate": _round(mean_of(records, "solver/pass_rate")),
        "steps_trained": len(trained),
        "wall_time_s": round(wall_time_s, 1),
        "train_time_s": round(train_time_s, 1),
        "seed": seed,
        "ablation": ablation,
    }
    if label:
        summary["label"] = label
    curve = [(0, accuracy_before, "full")]
    curve += [(s, a, "subset") for s, a in eval_points(run_dir)]
    curve.append((steps, accuracy_after, "full"))
    title = f"seed {seed}" + (f", {ablation}" if ablation else "")
    write_plots(out, records, curve, title)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "report.md").write_text(report_markdown(summary, curve))
    return summary


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def report_markdown(summary: dict[str, Any], curve: list[tuple[int, float, str]]) -> str:
    what = "coin-flip Solver reward (ablation)" if summary["ablation"] == "random-reward" else "dual-play"
    lines = [
        f"# PasoDoble demo: {what}, seed {summary['seed']}",
        "",
        "The Solver's held-out pass@1 (mean of 4 samples at the training temperature on 500 canonical",
        "problems never seen in training), before and after online dual-play:",
        "",
        "| | held-out pass@1 |",
        "| --- | --- |",
        f"| cold-start Solver | {100 * summary['accuracy_before']:.1f}% |",
        f"| after {summary['steps']} dual-play steps | {100 * summary['accuracy_after']:.1f}% |",
        f"| gain | {summary['gain_points']:+.1f} points |",
        "",
        f"- valid-question rate (mean over steps): {_pct(summary['valid_question_rate'])}",
        f"- Solver pass rate on the Proposer's questions (mean): {_pct(summary['mean_pass_rate'])}",
        f"- steps in which a role trained: {summary['steps_trained']} of {summary['steps']}",
        f"- wall time: {summary['wall_time_s']:.0f} s (dual-play {summary['train_time_s']:.0f} s)",
        "",
        "## Held-out accuracy vs step",
        "",
        "| step | pass@1 | evaluated on |",
        "| --- | --- | --- |",
    ]
    for step, acc, kind in curve:
        lines.append(
            f"| {step} | {100 * acc:.1f}% | {'all 500 x 4 samples' if kind == 'full' else 'in-training subset'} |"
        )
    lines += ["", "![accuracy](accuracy.png)", ""]
    for name, title in PLOTS.items():
        if name != "accuracy.png":
            lines += [f"### {title}", "", f"![{name}]({name})", ""]
    lines += [
        "Files: `solver_cold_start/` and `solver_final/` (Hugging Face model directories), `eval/` (samples",
        "and results of both evaluations), `run/` (the dual-play run: config, metrics.jsonl, rollouts.jsonl).",
        "",
    ]
    return "\n".join(lines)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def plot_cold_start_curve(metrics: list[dict[str, Any]], path: Path) -> None:
    """The cold-start Solver's validation accuracy and held-out loss vs SFT step (``toy build``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(r["step"], 100 * r["val_accuracy"]) for r in metrics if "val_accuracy" in r]
    loss = [(r["step"], r["eval_loss"]) for r in metrics if "eval_loss" in r and r["step"] > 0]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label="validation pass@1 (%)")
    ax.set_xlabel("Solver SFT step")
    ax.set_ylabel("validation pass@1 (%)")
    ax.grid(alpha=0.3)
    if loss:
        ax2 = ax.twinx()
        ax2.plot(
            [p[0] for p in loss], [p[1] for p in loss], color="tab:orange", alpha=0.7, label="held-out loss"
        )
        ax2.set_ylabel("held-out loss per token")
    ax.set_title("Cold-start Solver (toy build)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
