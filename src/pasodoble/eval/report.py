"""Results tables and charts: one run's ``results.md`` and the side-by-side ``pasodoble report``.

Tables follow the layout of the paper's Table 1: one column per benchmark in the order AIME24,
AIME25, AMC23, GSM8K, MATH-500, OlympiadBench (other benchmarks after them), then Avg.; values are
percentages with one decimal.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pasodoble.errors import UserError
from pasodoble.eval.benchmarks import PAPER_BENCHMARKS, display_name
from pasodoble.eval.metrics import METRICS


def ordered_benchmarks(names: list[str]) -> list[str]:
    """Paper order first, then the others in their given order."""
    paper = [b for b in PAPER_BENCHMARKS if b in names]
    return paper + [b for b in names if b not in paper]


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100.0 * float(value):.1f}"


def _display(results: dict[str, Any], name: str) -> str:
    return results.get("display_names", {}).get(name) or display_name(name)


def results_markdown(results: dict[str, Any]) -> str:
    """One run: rows pass@1 (mean of k), maj@k, pass@k; columns benchmarks and Avg."""
    names = ordered_benchmarks(list(results["benchmarks"]))
    k = results.get("config", {}).get("samples") or max(
        (b["k"] for b in results["benchmarks"].values()), default=0
    )
    header = ["Metric", *(_display(results, n) for n in names), "Avg."]
    lines = [
        f"# Evaluation of `{results.get('model', '?')}`",
        "",
        f"k = {k} samples per problem, temperature {results.get('config', {}).get('temperature')}, "
        f"{results.get('config', {}).get('few_shot', 0)}-shot, seed {results.get('seed')}. Percentages.",
        "",
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(["---"] + ["---:"] * (len(header) - 1)) + " |",
    ]
    labels = {"pass@1": f"pass@1 (mean of {k})", "maj@k": f"maj@{k}", "pass@k": f"pass@{k}"}
    for metric in METRICS:
        cells = [_pct(results["benchmarks"][n][metric]) for n in names]
        lines.append(
            f"| {labels[metric]} | " + " | ".join(cells) + f" | {_pct(results['average'][metric])} |"
        )
    lines.append("")
    lines.append("| Benchmark | problems | dataset sha256 |")
    lines.append("| --- | ---: | --- |")
    for n in names:
        ds = results.get("datasets", {}).get(n, {})
        lines.append(
            f"| {_display(results, n)} | {results['benchmarks'][n]['n']} | `{ds.get('sha256', '')[:16]}` |"
        )
    return "\n".join(lines) + "\n"


def load_results(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A results.json, or a directory holding one (directly, in ``eval/``, or as its only results.json below)."""
    p = Path(path)
    candidates = [p] if p.is_file() else [p / "results.json", p / "eval" / "results.json"]
    if p.is_dir() and not any(c.is_file() for c in candidates):
        found = sorted(p.rglob("results.json"))
        if len(found) > 1:
            listing = ", ".join(str(f) for f in found[:5]) + (", ..." if len(found) > 5 else "")
            raise UserError(f"{p} holds several results.json ({listing}); name one")
        candidates = found
    for c in candidates:
        if c.is_file():
            try:
                data = json.loads(c.read_text())
            except json.JSONDecodeError as exc:
                raise UserError(f"{c} is not valid JSON ({exc.msg})") from None
            if not isinstance(data, dict) or "benchmarks" not in data:
                raise UserError(f"{c} is not a pasodoble results file (no 'benchmarks')")
            return data
    raise UserError(f"no results.json at {p}")


def default_label(path: str | os.PathLike[str]) -> str:
    p = Path(path).resolve()
    if p.is_file():
        p = p.parent
    if p.name == "eval":
        p = p.parent
    return p.name


def comparison_table(
    runs: list[tuple[str, dict[str, Any]]], metric: str = "pass@1"
) -> tuple[list[str], list[list[Any]]]:
    """Columns (benchmark names then 'average') and one row of fractions (or None) per run.

    Avg. is each run's own unweighted mean over the benchmarks it evaluated.
    """
    names: list[str] = []
    for _, res in runs:
        for n in res["benchmarks"]:
            if n not in names:
                names.append(n)
    names = ordered_benchmarks(names)
    rows = []
    for _, res in runs:
        row = [res["benchmarks"].get(n, {}).get(metric) for n in names]
        avg = res.get("average", {}).get(metric)
        rows.append([*row, avg])
    return [*names, "average"], rows


def comparison_markdown(runs: list[tuple[str, dict[str, Any]]], metric: str = "pass@1") -> str:
    columns, rows = comparison_table(runs, metric)
    disp = {}
    for _, res in runs:
        disp.update(res.get("display_names", {}))
    titles = [disp.get(c) or display_name(c) for c in columns[:-1]] + ["Avg."]
    lines = [
        f"# Comparison ({metric}, percentages)",
        "",
        "| Model | " + " | ".join(titles) + " |",
        "| --- | " + " | ".join(["---:"] * len(titles)) + " |",
    ]
    for (label, _), row in zip(runs, rows, strict=True):
        lines.append(f"| {label} | " + " | ".join(_pct(v) for v in row) + " |")
    sets = {tuple(sorted(res["benchmarks"])) for _, res in runs}
    if len(sets) > 1:
        lines += ["", "Runs evaluated different benchmark sets: each Avg. is over that run's own benchmarks."]
    hashes: dict[str, set[str]] = {}
    for _, res in runs:
        for n, ds in res.get("datasets", {}).items():
            hashes.setdefault(n, set()).add(ds.get("sha256", ""))
    differing = [n for n, h in hashes.items() if len(h) > 1]
    if differing:
        lines += ["", "Warning: different problem sets (dataset sha256) for: " + ", ".join(differing) + "."]
    lines += [
        "",
        "| Run | results | model | k | temperature | few-shot |",
        "| --- | --- | --- | ---: | ---: | ---: |",
    ]
    for label, res in runs:
        cfg = res.get("config", {})
        lines.append(
            f"| {label} | {res.get('_path', '')} | `{res.get('model', '')}` | {cfg.get('samples', '')} | "
            f"{cfg.get('temperature', '')} | {cfg.get('few_shot', '')} |"
        )
    return "\n".join(lines) + "\n"


def comparison_chart(
    runs: list[tuple[str, dict[str, Any]]], path: str | os.PathLike[str], metric: str = "pass@1"
) -> None:
    """Grouped bar chart: one group per benchmark (plus Avg.), one bar per run (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns, rows = comparison_table(runs, metric)
    disp = {}
    for _, res in runs:
        disp.update(res.get("display_names", {}))
    titles = [disp.get(c) or display_name(c) for c in columns[:-1]] + ["Avg."]
    width = 0.8 / max(1, len(runs))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(titles) + 0.4 * len(runs)), 4.0))
    for i, ((label, _), row) in enumerate(zip(runs, rows, strict=True)):
        xs = [c + (i - (len(runs) - 1) / 2) * width for c in range(len(titles))]
        bars = ax.bar(xs, [100.0 * v if v is not None else 0.0 for v in row], width, label=label)
        ax.bar_label(bars, labels=[f"{100.0 * v:.1f}" if v is not None else "" for v in row], fontsize=6)
    ax.set_xticks(range(len(titles)))
    ax.set_xticklabels(titles, rotation=20, ha="right")
    ax.set_ylabel(f"{metric} (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(
    paths: list[str], out_dir: str | os.PathLike[str], labels: list[str] | None = None, metric: str = "pass@1"
) -> dict[str, Any]:
    """Load the results, write report.md, report.json and report.png into ``out_dir``; return report.json."""
    if not paths:
        raise UserError("give at least one results.json or directory")
    if labels is not None and len(labels) != len(paths):
        raise UserError(f"--labels has {len(labels)} label(s) for {len(paths)} result(s)")
    if metric not in METRICS:
        raise UserError(f"--metric must be one of {', '.join(METRICS)}; got {metric!r}")
    runs = []
    for i, p in enumerate(paths):
        res = load_results(p)
        res["_path"] = str(p)
        runs.append((labels[i] if labels else default_label(p), res))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    columns, rows = comparison_table(runs, metric)
    report = {
        "metric": metric,
        "columns": columns,
        "runs": [
            {
                "label": label,
                "path": res["_path"],
                "model": res.get("model"),
                "values": dict(zip(columns, row, strict=True)),
            }
            for (label, res), row in zip(runs, rows, strict=True)
        ],
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(comparison_markdown(runs, metric))
    comparison_chart(runs, out / "report.png", metric)
    return report


# --------------------------------------------------------------------------------------------------
# Training runs: `pasodoble report RUN_DIR [RUN_DIR ...]` plots metrics.jsonl (no evaluation needed)

# (title, keys): a panel is drawn when some run logged one of its keys; "eval/*" is every held-out pass@1
TRAINING_PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Proposer reward and diversity", ("proposer/reward_mean", "proposer/diversity_mean")),
    (
        "Pass and valid rates",
        (
            "solver/pass_rate",
            "proposer/valid_rate",
            "proposer/band_rate",
            "proposer/validated_pass_rate_mean",
        ),
    ),
    ("Losses", ("proposer/loss", "solver/loss")),
    ("Gradient norms", ("proposer/grad_norm", "solver/grad_norm")),
    ("Completion length (tokens)", ("proposer/completion_len_mean", "solver/completion_len_mean")),
    ("Updates and skips (cumulative)", ("step/updates", "step/skips_total")),
    ("Question buffer", ("buffer/size",)),
    ("Held-out pass@1", ("eval/*",)),
)


def is_run_dir(path: str | os.PathLike[str]) -> bool:
    """A training run directory: holds a metrics.jsonl (written from its first step)."""
    return (Path(path) / "metrics.jsonl").is_file()


def load_metrics(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The run's metrics.jsonl lines (a torn last line of a killed run is skipped); ``UserError`` if none."""
    path = Path(run_dir) / "metrics.jsonl"
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
    if not rows:
        raise UserError(f"{path} holds no logged step yet")
    return rows


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """Steps (1-based: the step count after the step) and values of ``key`` where it is a finite number."""
    xs, ys = [], []
    for r in rows:
        v = r.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf"):
            xs.append(int(r["step"]) + 1)
            ys.append(float(v))
    return xs, ys


def _panel_keys(keys: tuple[str, ...], runs: list[tuple[str, list[dict[str, Any]]]]) -> list[str]:
    present: list[str] = []
    for _, rows in runs:
        for r in rows:
            for k in r:
                wanted = any(
                    k == p or (p.endswith("*") and k.startswith(p[:-1]) and k.endswith("pass@1"))
                    for p in keys
                )
                if wanted and k not in present:
                    present.append(k)
    order = {k: i for i, k in enumerate(keys)}
    return sorted(present, key=lambda k: order.get(k, len(order)))


def training_markdown(
    runs: list[tuple[str, str, list[dict[str, Any]]]], panels: list[tuple[str, list[str]]]
) -> str:
    lines = ["# Training runs", ""]
    lines += [
        "| Run | directory | steps logged | last step | updates | skips |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for label, path, rows in runs:
        last = rows[-1]
        lines.append(
            f"| {label} | {path} | {len(rows)} | {int(last['step']) + 1} | {last.get('step/updates', '')} | "
            f"{last.get('step/skips_total', '')} |"
        )
    lines += [
        "",
        "Each metric over the logged steps where it was recorded: first, last, mean, and the mean "
        "of the last quarter of those steps. Plots: report.png.",
        "",
    ]
    for title, keys in panels:
        lines += [
            f"## {title}",
            "",
            "| Run | metric | steps | first | last | mean | mean, last quarter |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for label, _, rows in runs:
            for key in keys:
                _, ys = _series(rows, key)
                if not ys:
                    continue
                tail = ys[len(ys) - max(1, len(ys) // 4) :]
                lines.append(
                    f"| {label} | `{key}` | {len(ys)} | {ys[0]:.4g} | {ys[-1]:.4g} | {sum(ys) / len(ys):.4g} | "
                    f"{sum(tail) / len(tail):.4g} |"
                )
        lines.append("")
    return "\n".join(lines)


def training_chart(
    runs: list[tuple[str, str, list[dict[str, Any]]]], panels: list[tuple[str, list[str]]], path: Path
) -> None:
    """One panel per group of metrics, one line per run and metric, over the step count (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    cols = 2 if len(panels) > 1 else 1
    nrows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(6.0 * cols, 3.2 * nrows), squeeze=False)
    styles = ["-", "--", ":", "-."]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (title, keys) in zip(axes.flat, panels, strict=False):
        for i, (label, _, rows) in enumerate(runs):
            for j, key in enumerate(keys):
                xs, ys = _series(rows, key)
                if not xs:
                    continue
                name = key if len(runs) == 1 else f"{label}: {key}"
                color = colors[(j if len(runs) == 1 else i) % len(colors)]
                style = styles[(j if len(runs) > 1 else 0) % len(styles)]
                marker = "o" if len(xs) <= 30 else None
                ax.plot(xs, ys, style, color=color, marker=marker, markersize=3, linewidth=1.2, label=name)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_training_report(
    run_dirs: list[str], out_dir: str | os.PathLike[str], labels: list[str] | None = None
) -> dict[str, Any]:
    """Plots and a summary of training runs' metrics.jsonl: report.md, report.json, report.png in ``out_dir``."""
    if labels is not None and len(labels) != len(run_dirs):
        raise UserError(f"--labels has {len(labels)} label(s) for {len(run_dirs)} run(s)")
    runs = [
        (labels[i] if labels else default_label(p), str(p), load_metrics(p)) for i, p in enumerate(run_dirs)
    ]
    pairs = [(label, rows) for label, _, rows in runs]
    panels = [(title, _panel_keys(keys, pairs)) for title, keys in TRAINING_PANELS]
    panels = [(t, k) for t, k in panels if k]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "runs": [
            {
                "label": label,
                "path": path,
                "steps_logged": len(rows),
                "last_step": int(rows[-1]["step"]) + 1,
                "updates": rows[-1].get("step/updates"),
                "skips": rows[-1].get("step/skips_total"),
            }
            for label, path, rows in runs
        ],
        "panels": {title: keys for title, keys in panels},
    }
    (out / "report.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "report.md").write_text(training_markdown(runs, panels))
    training_chart(runs, panels, out / "report.png")
    return summary
