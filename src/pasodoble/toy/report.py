"""The demo's ``summary.json``, ``report.md`` and PNG plots, from the run's own files.

Reads ``RUN/metrics.jsonl`` (one record per step) and the held-out evaluations' samples: the cold start
and the final Solver on all problems (``OUT/eval/cold_start``, ``OUT/eval/final``) and the in-training
ones on a subset (``RUN/eval/step_*``). Every evaluation's answers are also sorted by style
(``toy.accuracy.style_summary``: worked out step by step, or stated directly), which is what the
report's story is about.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pasodoble.toy.accuracy import style_summary
from pasodoble.toy.intervals import bootstrap_interval, demo_intervals, per_problem

PLOTS = {
    "accuracy.png": "Solver held-out pass@1 and worked-style share vs step",
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
STYLE_FIELDS = ("worked_share", "worked_accuracy", "direct_accuracy")


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_samples(eval_dir: Path) -> list[dict[str, Any]]:
    """The graded samples (``samples.jsonl``) of one ``pasodoble eval``-format evaluation."""
    path = eval_dir / "samples.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def evaluation_point(
    step: int, rows: list[dict[str, Any]], evaluated_on: str, problems: set[str] | None = None
) -> dict[str, Any]:
    """pass@1 and the style summary of ``rows`` (only those of ``problems`` when given) at ``step``."""
    if problems is not None:
        rows = [r for r in rows if r["problem_id"] in problems]
    styles = style_summary((r["response"], r["correct"]) for r in rows)
    scores = per_problem(rows)
    return {
        "step": step,
        "evaluated_on": evaluated_on,
        "problems": len(scores),
        "samples_per_problem": len(rows) // max(1, len(scores)),
        "accuracy": styles["accuracy"],
        # 95% interval of pass@1, a bootstrap over problems (toy/intervals.py)
        "accuracy_ci": list(bootstrap_interval(list(scores.values()))) if scores else None,
        **{k: styles[k] for k in STYLE_FIELDS},
    }


def evaluation_curve(out: Path, run_dir: Path, steps: int) -> list[dict[str, Any]]:
    """Every held-out evaluation point of a demo, by step.

    ``all`` points: the cold start (step 0) and the final Solver on every problem. ``subset`` points:
    the in-training evaluations, plus the cold start and the final Solver restricted to the same
    problems (their per-problem sampling seeds are the same, so the subset curve is one protocol
    from step 0 to the end).
    """
    before, after = read_samples(out / "eval" / "cold_start"), read_samples(out / "eval" / "final")
    curve = [evaluation_point(0, before, "all")]
    inner = sorted((run_dir / "eval").glob("step_*/samples.jsonl"))
    if inner:
        points = [(int(p.parent.name.split("_")[1]), read_samples(p.parent)) for p in inner]
        subset = {r["problem_id"] for r in points[0][1]}
        curve.append(evaluation_point(0, before, "subset", subset))
        curve += [evaluation_point(step, rows, "subset") for step, rows in points]
        if points[-1][0] != steps:
            curve.append(evaluation_point(steps, after, "subset", subset))
    curve.append(evaluation_point(steps, after, "all"))
    return curve


def mean_of(records: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in records if isinstance(r.get(key), (int, float))]
    return sum(values) / len(values) if values else None


def smoothed(xs: list[int], ys: list[float], window: int = 10) -> tuple[list[int], list[float]]:
    out = []
    for i in range(len(ys)):
        part = ys[max(0, i - window + 1) : i + 1]
        out.append(sum(part) / len(part))
    return xs, out


def plot_accuracy_and_style(curve: list[dict[str, Any]], path: Path, title: str) -> None:
    """Held-out pass@1 and the share of worked-style answers vs step, both in % on a 0-100 axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for key, color, name in (
        ("accuracy", "tab:blue", "pass@1"),
        ("worked_share", "tab:green", "worked share"),
    ):
        sub = [p for p in curve if p["evaluated_on"] == "subset"]
        full = [p for p in curve if p["evaluated_on"] == "all"]
        if sub:
            ax.errorbar(
                [p["step"] for p in sub],
                [100 * p[key] for p in sub],
                yerr=_yerr(sub) if key == "accuracy" else None,
                color=color,
                marker=".",
                ls="-" if key == "accuracy" else "--",
                capsize=2,
                elinewidth=0.8,
                label=f"{name}, {sub[0]['problems']} problems x {sub[0]['samples_per_problem']}",
            )
        ax.errorbar(
            [p["step"] for p in full],
            [100 * p[key] for p in full],
            yerr=_yerr(full) if key == "accuracy" else None,
            color=color,
            marker="o",
            ls="none",
            ms=8,
            capsize=4,
            label=f"{name}, all {full[0]['problems']} x {full[0]['samples_per_problem']}"
            + (" (95% interval)" if key == "accuracy" else ""),
        )
    ax.set_ylim(0, 100)
    ax.set_xlabel("dual-play step")
    ax.set_ylabel("% of held-out answers")
    ax.set_title(title, fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _yerr(points: list[dict[str, Any]]) -> list[list[float]] | None:
    """Error bars (below, above) in points from each point's ``accuracy_ci``."""
    if not all(p.get("accuracy_ci") for p in points):
        return None
    return [
        [100 * (p["accuracy"] - p["accuracy_ci"][0]) for p in points],
        [100 * (p["accuracy_ci"][1] - p["accuracy"]) for p in points],
    ]


def write_plots(out: Path, records: list[dict[str, Any]], curve: list[dict[str, Any]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot_accuracy_and_style(curve, out / "accuracy.png", f"{PLOTS['accuracy.png']}\n({title})")
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
    true_answers: bool = False,
) -> dict[str, Any]:
    records = read_metrics(run_dir)
    trained = [r for r in records if not r.get("step/skipped")]
    curve = evaluation_curve(out, run_dir, steps)
    first, last = curve[0], curve[-1]
    intervals = demo_intervals(
        read_samples(out / "eval" / "cold_start"), read_samples(out / "eval" / "final")
    )
    summary = {
        "accuracy_before": round(accuracy_before, 4),
        "accuracy_after": round(accuracy_after, 4),
        "gain_points": round(100 * (accuracy_after - accuracy_before), 2),
        # 95% intervals: a bootstrap over the held-out problems, paired for the gain (toy/intervals.py)
        "accuracy_before_ci": intervals["accuracy_before"],
        "accuracy_after_ci": intervals["accuracy_after"],
        "gain_points_ci": intervals["gain_points"],
        "interval": {k: intervals[k] for k in ("method", "level", "problems", "wide")},
        **{f"{k}_before": _round(first[k]) for k in STYLE_FIELDS},
        **{f"{k}_after": _round(last[k]) for k in STYLE_FIELDS},
        "steps": steps,
        "valid_question_rate": _round(mean_of(records, "proposer/valid_rate")),
        "mean_pass_rate": _round(mean_of(records, "solver/pass_rate")),
        "steps_trained": len(trained),
        "wall_time_s": round(wall_time_s, 1),
        "train_time_s": round(train_time_s, 1),
        "seed": seed,
        "ablation": ablation,
        "true_answers": true_answers,
        "curve": [_round_point(p) for p in curve],
    }
    if label:
        summary["label"] = label
    title = (
        f"seed {seed}" + (f", {ablation}" if ablation else "") + (", true answers" if true_answers else "")
    )
    write_plots(out, records, curve, title)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "report.md").write_text(report_markdown(summary))
    return summary


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def _round_point(point: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in point.items():
        if isinstance(v, float):
            v = _round(v)
        elif isinstance(v, list):
            v = [_round(x) for x in v]
        out[k] = v
    return out


def story(summary: dict[str, Any]) -> str:
    """The report's paragraph in plain words: what the cold start does, what the run changed, and why."""
    w0, w1 = _pct(summary["worked_share_before"]), _pct(summary["worked_share_after"])
    a0, a1 = _pct(summary["accuracy_before"]), _pct(summary["accuracy_after"])
    rose = (summary["worked_share_after"] or 0) > (summary["worked_share_before"] or 0) + 0.05
    wa, da = summary["worked_accuracy_before"], summary["direct_accuracy_before"]
    cold = (
        "The cold-start Solver learned from a teacher that worked about half of its problems out step by "
        "step and simply stated the answer for the rest, and it copied both habits: before training it "
        f"worked out {w0} of its held-out answers. Its worked answers were right {_pct(wa)} of the time, "
        f"its direct ones {_pct(da)}"
    )
    if wa is not None and da is not None and da < wa / 2:
        cold += ": a model of 1.8 M parameters cannot find the value in one go, but it can do one operation per line."
    else:
        cold += "."
    if summary["ablation"] == "partial-random-reward":
        return (
            f"{cold} In this control run the Solver's reward was a coin flip for every answer with a boxed "
            "final answer and 0 for any other, so the reward paid for the format and not for being right; "
            "both habits box their answers, so neither paid more than the other: after "
            f"{summary['steps']} steps it works out {w1} of its answers and held-out pass@1 went from {a0} to "
            f"{a1} ({summary['gain_points']:+.1f} points). Compare a dual-play run, where the reward is "
            "agreement with the Proposer's answers."
        )
    if summary["ablation"] == "random-reward":
        return (
            f"{cold} In this control run the Solver's reward was a coin flip, so neither habit paid more "
            "than the other and the share of worked answers drifted at random, up or down: after "
            f"{summary['steps']} steps it works out {w1} of its answers and held-out pass@1 went from {a0} to "
            f"{a1} ({summary['gain_points']:+.1f} points). Compare a dual-play run, where the reward is "
            "agreement with the Proposer's answers."
        )
    if summary.get("true_answers"):
        how = (
            "In this diagnosis run (not dual-play as users run it) each question the Proposer wrote was "
            "labelled with its true answer, so the Solver was rewarded for being right: it shows what "
            "perfect labels would do in the same budget."
        )
    else:
        how = (
            "During dual-play nobody gave it a right answer: it was rewarded when its answer agreed with the "
            "Proposer's, and the Proposer had worked its own problems out from a snippet of the corpus."
        )
    if rose:
        change = (
            f"Worked answers {'are right' if summary.get('true_answers') else 'agree with those'} far more "
            "often, so each GRPO update made working things out more likely: "
            f"after {summary['steps']} steps the Solver works out {w1} of its answers and its held-out pass@1 "
            f"went from {a0} to {a1} ({summary['gain_points']:+.1f} points)."
        )
    else:
        change = (
            f"After {summary['steps']} steps it works out {w1} of its answers and held-out pass@1 went from "
            f"{a0} to {a1} ({summary['gain_points']:+.1f} points): in this run the share of worked answers "
            "did not rise."
        )
    why = (
        "This is what RL does for real reasoning models: it teaches them little new knowledge, but among "
        "behaviours they already have it selects the one that gets answers right, and working a problem "
        "out step by step is the best known of those."
    )
    return f"{cold} {how} {change} {why}"


def report_markdown(summary: dict[str, Any]) -> str:
    what = {
        "random-reward": "coin-flip Solver reward (ablation)",
        "partial-random-reward": "coin-flip Solver reward for boxed answers only (ablation)",
    }.get(summary["ablation"], "dual-play")
    if summary.get("true_answers"):
        what = "true-answer labels (diagnosis)"
    curve = summary["curve"]
    full = [p for p in curve if p["evaluated_on"] == "all"]
    n, k = full[0]["problems"], full[0]["samples_per_problem"]
    lines = [
        f"# PasoDoble demo: {what}, seed {summary['seed']}",
        "",
        story(summary),
        "",
        f"Held-out set: {n} canonical problems never seen in training, {k} samples each at the training",
        "temperature; pass@1 is the mean correctness of the samples. An answer is *worked* when it shows at",
        "least one working line (`a op b = c`), *direct* when it only states `The answer is \\boxed{V}.`",
        "",
        "| | cold-start Solver | after {} steps | change |".format(summary["steps"]),
        "| --- | --- | --- | --- |",
        f"| held-out pass@1 | {_pct(summary['accuracy_before'])} | {_pct(summary['accuracy_after'])} | "
        f"{summary['gain_points']:+.1f} points |",
        f"| 95% interval | {_ci(summary.get('accuracy_before_ci'))} | {_ci(summary.get('accuracy_after_ci'))} | "
        f"{_ci(summary.get('gain_points_ci'), points=True)} |",
        f"| worked-style share of the answers | {_pct(summary['worked_share_before'])} | "
        f"{_pct(summary['worked_share_after'])} | {_points(summary, 'worked_share')} |",
        f"| accuracy of worked answers | {_pct(summary['worked_accuracy_before'])} | "
        f"{_pct(summary['worked_accuracy_after'])} | {_points(summary, 'worked_accuracy')} |",
        f"| accuracy of direct answers | {_pct(summary['direct_accuracy_before'])} | "
        f"{_pct(summary['direct_accuracy_after'])} | {_points(summary, 'direct_accuracy')} |",
        "",
        *_interval_note(summary),
        f"- valid-question rate (mean over steps): {_pct(summary['valid_question_rate'])}",
        f"- Solver pass rate on the Proposer's questions (mean): {_pct(summary['mean_pass_rate'])}",
        f"- steps in which a role trained: {summary['steps_trained']} of {summary['steps']}",
        f"- wall time: {summary['wall_time_s']:.0f} s (dual-play {summary['train_time_s']:.0f} s)",
        "",
        "## Held-out pass@1 and worked-style share vs step",
        "",
        "| step | pass@1 | worked share | worked right | direct right | evaluated on |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for p in curve:
        lines.append(
            f"| {p['step']} | {_pct(p['accuracy'])} | {_pct(p['worked_share'])} | "
            f"{_pct(p['worked_accuracy'])} | {_pct(p['direct_accuracy'])} | "
            f"{'all' if p['evaluated_on'] == 'all' else 'the first'} {p['problems']} x "
            f"{p['samples_per_problem']} |"
        )
    lines += ["", "![accuracy and worked share](accuracy.png)", ""]
    for name, title in PLOTS.items():
        if name != "accuracy.png":
            lines += [f"### {title}", "", f"![{name}]({name})", ""]
    lines += [
        "Files: `solver_cold_start/` and `solver_final/` (Hugging Face model directories), `eval/` (samples",
        "and results of both evaluations), `run/` (the dual-play run: config, metrics.jsonl, rollouts.jsonl,",
        "and the in-training evaluations in `run/eval/`).",
        "",
    ]
    return "\n".join(lines)


def _ci(ci: list[float] | None, points: bool = False) -> str:
    if not ci:
        return "n/a"
    if points:
        return f"{ci[0]:+.1f} to {ci[1]:+.1f} points"
    return f"{100 * ci[0]:.1f}-{100 * ci[1]:.1f}%"


def _interval_note(summary: dict[str, Any]) -> list[str]:
    """The line under the table that says how the intervals were made, and when they are wide."""
    info = summary.get("interval")
    if not info:
        return []
    note = (
        f"- 95% intervals: {info['method']}, over {info['problems']} problems; they cover which problems "
        "were drawn and the sampling of the answers, not other seeds of the run."
    )
    if info.get("wide"):
        lo, hi = summary["gain_points_ci"]
        note += (
            f" **Only {info['problems']} problems were evaluated (--eval-limit), so the interval is wide** "
            f"(the gain's spans {hi - lo:.1f} points); run without --eval-limit for all 500."
        )
    return [note]


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _points(summary: dict[str, Any], key: str) -> str:
    a, b = summary[f"{key}_before"], summary[f"{key}_after"]
    return "n/a" if a is None or b is None else f"{100 * (b - a):+.1f} points"


def plot_cold_start_curve(metrics: list[dict[str, Any]], path: Path) -> None:
    """The cold-start Solver's validation accuracy (with its worked-style share and each style's
    accuracy when recorded) and held-out loss vs SFT step (``toy build``), on a 0-100 axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    series = (
        ("val_accuracy", "validation pass@1", "tab:blue", "o"),
        ("val_worked_share", "worked-style share", "tab:green", "s"),
        ("val_worked_accuracy", "accuracy of worked answers", "tab:olive", "^"),
        ("val_direct_accuracy", "accuracy of direct answers", "tab:red", "v"),
    )
    for key, name, color, marker in series:
        pts = [(r["step"], 100 * r[key]) for r in metrics if isinstance(r.get(key), (int, float))]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, ms=4, color=color, label=name)
    ax.set_ylim(0, 100)
    ax.set_xlabel("Solver SFT step")
    ax.set_ylabel("% of validation answers")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper left")
    loss = [(r["step"], r["eval_loss"]) for r in metrics if "eval_loss" in r and r["step"] > 0]
    if loss:
        ax2 = ax.twinx()
        ax2.plot(
            [p[0] for p in loss], [p[1] for p in loss], color="tab:orange", alpha=0.5, label="held-out loss"
        )
        ax2.set_ylabel("held-out loss per token (orange)")
    ax.set_title("Cold-start Solver (toy build)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
