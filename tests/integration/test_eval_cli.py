"""`pasodoble eval` / `report` end to end: tiny model on every benchmark, re-grading, resume, errors."""

from __future__ import annotations

import json
import random

import pytest
import torch

from pasodoble.cli import main
from pasodoble.config import GraderConfig
from pasodoble.eval.benchmarks import Benchmark, Problem, find_data_dir
from pasodoble.eval.metrics import average_metrics
from pasodoble.eval.runner import EvalSettings, GenerationRequest, metrics_from_samples, run_eval
from pasodoble.testing.tiny import build_tiny_model, build_tiny_tokenizer
from pasodoble.verify import Grader

HAVE_DATA = find_data_dir() is not None and (find_data_dir() / "math500.jsonl").exists()
needs_data = pytest.mark.skipif(not HAVE_DATA, reason="shared/benchmarks not found")


@pytest.fixture
def one_thread():
    """The tiny model runs faster on one thread (much faster when other jobs share the cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    tok = build_tiny_tokenizer()
    build_tiny_model(tok, seed=0).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _regrade(samples_path, tmp_path):
    """Run `pasodoble grade` on samples.jsonl and rebuild the per-benchmark metrics from its verdicts."""
    graded_path = tmp_path / "graded.jsonl"
    assert main(["grade", str(samples_path), "--out", str(graded_path), "--no-progress"]) == 0
    samples = [json.loads(line) for line in samples_path.read_text().splitlines()]
    verdicts = {v["id"]: v for v in map(json.loads, graded_path.read_text().splitlines())}
    assert len(verdicts) == len(samples)
    rows = [
        {**s, "pred": verdicts[s["id"]]["pred"], "correct": verdicts[s["id"]]["correct"]} for s in samples
    ]
    return metrics_from_samples(rows)


def _strip_volatile(results):
    return {
        k: v
        for k, v in results.items()
        if k not in ("elapsed_s", "finished_at", "generated_problems", "reused_problems", "versions")
    }


@needs_data
@pytest.mark.slow
def test_tiny_model_all_benchmarks_regrade_reproduces(tiny_dir, tmp_path, one_thread):
    out = tmp_path / "eval"
    args = [
        "eval",
        "--model",
        str(tiny_dir),
        "--benchmarks",
        "paper",
        "--limit",
        "10",
        "--samples",
        "2",
        "--max-new-tokens",
        "16",
        "--out",
        str(out),
        "--no-progress",
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert list(results["benchmarks"]) == ["aime24", "aime25", "amc23", "gsm8k", "math500", "olympiadbench"]
    for name, m in results["benchmarks"].items():
        assert m["n"] == 10 and m["k"] == 2, name
        assert set(m) >= {"n", "pass@1", "maj@k", "pass@k"}
        assert len(results["datasets"][name]["sha256"]) == 64
    assert set(results["average"]) == {"pass@1", "maj@k", "pass@k"}
    assert results["model"] == str(tiny_dir) and results["seed"] == 0 and results["versions"]["torch"]
    table = (out / "results.md").read_text()
    assert "| Metric | AIME24 | AIME25 | AMC23 | GSM8K | MATH-500 | OlympiadBench | Avg. |" in table
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 6 * 10 * 2
    assert set(samples[0]) >= {
        "id",
        "benchmark",
        "problem_id",
        "sample",
        "response",
        "gold",
        "pred",
        "correct",
        "reason",
    }

    regraded = _regrade(out / "samples.jsonl", tmp_path)
    assert regraded == results["benchmarks"]
    assert average_metrics(regraded) == results["average"]

    # a finished evaluation rerun generates nothing and reports the same numbers
    assert main(args) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["generated_problems"] == 0 and again["reused_problems"] == 60
    assert _strip_volatile(again) == _strip_volatile(results)


@needs_data
@pytest.mark.slow
def test_cli_interrupted_then_resumed_matches_uninterrupted(tiny_dir, tmp_path, one_thread, monkeypatch):
    from pasodoble.eval import runner

    base = [
        "eval",
        "--model",
        str(tiny_dir),
        "--benchmarks",
        "gsm8k,amc23",
        "--limit",
        "4",
        "--samples",
        "3",
        "--max-new-tokens",
        "8",
        "--temperature",
        "1.0",
        "--seed",
        "7",
        "--no-progress",
        "--device",
        "cpu",
    ]
    assert main([*base, "--out", str(tmp_path / "full")]) == 0
    full = json.loads((tmp_path / "full" / "results.json").read_text())

    calls: list[str] = []
    original = runner.BackendGenerator.__call__

    def interrupting(self, requests, n):
        if len(calls) >= 3:
            raise KeyboardInterrupt
        calls.extend(r.problem_id for r in requests)
        return original(self, requests, n)

    monkeypatch.setattr(runner.BackendGenerator, "__call__", interrupting)
    monkeypatch.setattr(runner, "run_eval", _small_chunks(runner.run_eval))
    out = tmp_path / "resumed"
    assert main([*base, "--out", str(out)]) == 130  # interrupted
    assert not (out / "results.json").exists()
    assert len((out / "samples.jsonl").read_text().splitlines()) == 3 * 3

    calls.clear()
    monkeypatch.setattr(
        runner.BackendGenerator,
        "__call__",
        lambda self, r, n: (calls.extend(x.problem_id for x in r), original(self, r, n))[1],
    )
    assert main([*base, "--out", str(out)]) == 0
    assert len(calls) == 8 - 3  # only the unfinished problems
    resumed = json.loads((out / "results.json").read_text())
    assert resumed["benchmarks"] == full["benchmarks"]
    full_samples = sorted((tmp_path / "full" / "samples.jsonl").read_text().splitlines())
    assert sorted((out / "samples.jsonl").read_text().splitlines()) == full_samples


def _small_chunks(run_eval_fn):
    def wrapped(*args, **kwargs):
        kwargs["problems_per_call"] = 1
        return run_eval_fn(*args, **kwargs)

    return wrapped


# --------------------------------------------------------------------------------------------------
# The runner with a fake generator and the real grader


def _toy_benchmarks():
    a = Benchmark(
        "alpha", [Problem(f"a{i}", f"What is {i} + {i}?", str(2 * i)) for i in range(6)], "mem", "Alpha"
    )
    b = Benchmark(
        "beta",
        [Problem(f"b{i}", f"Half of {2 * i + 2}?", f"\\frac{{{2 * i + 2}}}{{2}}") for i in range(5)],
        "mem",
        "Beta",
    )
    return [a, b]


class FakeGenerator:
    """Deterministic responses from each request's seed: right, right in another form, wrong, or no box."""

    def __init__(self, fail_after: int | None = None):
        self.calls: list[str] = []
        self.fail_after = fail_after

    def __call__(self, requests: list[GenerationRequest], n: int):
        out = []
        for req in requests:
            if self.fail_after is not None and len(self.calls) >= self.fail_after:
                raise RuntimeError("simulated crash")
            self.calls.append(req.problem_id)
            rng = random.Random(req.seed)
            gold = _gold(req.problem)
            choices = [
                f"So \\boxed{{{gold}}}.",
                f"The answer is $\\boxed{{{gold}.0}}$",
                "\\boxed{-1}",
                "no idea",
                "\\boxed{x+1}",
            ]
            out.append([rng.choice(choices) for _ in range(n)])
        return out


def _gold(problem: str) -> str:
    nums = [int(t.strip("?")) for t in problem.split() if t.strip("?").isdigit()]
    return str(sum(nums)) if "+" in problem else str(nums[0] // 2)


def _settings(**kw):
    return EvalSettings(**{"model": "fake", "benchmarks": ["alpha", "beta"], "samples": 4, "seed": 3, **kw})


def test_resume_after_crash_does_not_regenerate_and_matches(tmp_path):
    with Grader(GraderConfig(workers=0)) as grader:
        ref = run_eval(
            _settings(),
            _toy_benchmarks(),
            FakeGenerator(),
            grader.grade_batch,
            tmp_path / "ref",
            progress=False,
        )
        crashing = FakeGenerator(fail_after=4)
        with pytest.raises(RuntimeError, match="simulated crash"):
            run_eval(
                _settings(),
                _toy_benchmarks(),
                crashing,
                grader.grade_batch,
                tmp_path / "run",
                problems_per_call=3,
                progress=False,
            )
        lines = (tmp_path / "run" / "samples.jsonl").read_text().splitlines()
        assert len(lines) == 3 * 4  # the first chunk of 3 problems was written; the second crashed
        # a kill in the middle of a write: a torn line and a problem with only some of its samples
        torn = json.loads(lines[-1])
        with (tmp_path / "run" / "samples.jsonl").open("a") as fh:
            fh.write(json.dumps({**torn, "problem_id": "a3", "sample": 0}) + "\n")
            fh.write('{"benchmark": "alpha", "problem_id": "a4", "sam')
        again = FakeGenerator()
        res = run_eval(
            _settings(), _toy_benchmarks(), again, grader.grade_batch, tmp_path / "run", progress=False
        )
    assert again.calls == ["a3", "a4", "a5", "b0", "b1", "b2", "b3", "b4"]
    assert res["reused_problems"] == 3 and res["generated_problems"] == 8
    assert res["benchmarks"] == ref["benchmarks"] and res["average"] == ref["average"]
    assert 0 < ref["benchmarks"]["alpha"]["pass@1"] < 1  # the fake mixes right and wrong answers
    assert len((tmp_path / "run" / "samples.jsonl").read_text().splitlines()) == 11 * 4


def test_fake_run_regrades_exactly(tmp_path):
    with Grader(GraderConfig(workers=0)) as grader:
        res = run_eval(
            _settings(), _toy_benchmarks(), FakeGenerator(), grader.grade_batch, tmp_path, progress=False
        )
    assert _regrade(tmp_path / "samples.jsonl", tmp_path) == res["benchmarks"]
    beta = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines() if '"beta"' in x]
    assert any(r["correct"] and r["pred"] != r["gold"] for r in beta)  # equivalence, not string match


def test_settings_mismatch_is_an_error(tmp_path):
    from pasodoble.errors import UserError

    with Grader(GraderConfig(workers=0)) as grader:
        run_eval(
            _settings(), _toy_benchmarks(), FakeGenerator(), grader.grade_batch, tmp_path, progress=False
        )
        with pytest.raises(UserError, match="different settings.*temperature"):
            run_eval(
                _settings(temperature=1.0),
                _toy_benchmarks(),
                FakeGenerator(),
                grader.grade_batch,
                tmp_path,
                progress=False,
            )
        changed = _toy_benchmarks()
        changed[0].problems[0] = Problem("a0", "What is 0 + 0?", "1")
        with pytest.raises(UserError, match="another version of benchmark 'alpha'"):
            run_eval(_settings(), changed, FakeGenerator(), grader.grade_batch, tmp_path, progress=False)


# --------------------------------------------------------------------------------------------------
# CLI errors and the report


def test_cli_user_errors(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"problem": "1+1"}) + "\n")
    assert main(["eval", "--model", "tiny", "--benchmarks", str(bad), "--out", str(tmp_path / "o")]) == 1
    assert "bad.jsonl line 1: missing field 'answer'" in capsys.readouterr().err
    assert main(["eval", "--model", "tiny", "--benchmarks", "nope", "--out", str(tmp_path / "o")]) == 1
    assert "unknown benchmark 'nope'" in capsys.readouterr().err
    try:
        import vllm  # noqa: F401
    except ImportError:
        assert main(["eval", "--model", "tiny", "--backend", "vllm", "--out", str(tmp_path / "o")]) == 1
        assert "vllm" in capsys.readouterr().err


def test_report_compares_runs(tmp_path):
    with Grader(GraderConfig(workers=0)) as grader:
        run_eval(
            _settings(),
            _toy_benchmarks(),
            FakeGenerator(),
            grader.grade_batch,
            tmp_path / "base",
            progress=False,
        )
        run_eval(
            _settings(seed=4),
            _toy_benchmarks()[:1],
            FakeGenerator(),
            grader.grade_batch,
            tmp_path / "rl",
            progress=False,
        )
    out = tmp_path / "report"
    assert (
        main(
            [
                "report",
                str(tmp_path / "base"),
                str(tmp_path / "rl" / "results.json"),
                "--labels",
                "Base,PasoDoble",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    md = (out / "report.md").read_text()
    assert "| Model | Alpha | Beta | Avg. |" in md
    assert "| PasoDoble |" in md and "–" in md  # rl did not evaluate beta
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    report = json.loads((out / "report.json").read_text())
    assert [r["label"] for r in report["runs"]] == ["Base", "PasoDoble"]
    assert report["runs"][1]["values"]["beta"] is None
    assert main(["report", str(tmp_path / "base"), "--labels", "a,b", "--out", str(out)]) == 1


@needs_data
@pytest.mark.slow
def test_killed_subprocess_resumes_without_regenerating(tiny_dir, tmp_path):
    """SIGKILL a real `pasodoble eval` halfway, rerun the same command: same numbers, no regeneration."""
    import os
    import signal
    import subprocess
    import sys
    import time

    args = [
        "--model",
        str(tiny_dir),
        "--benchmarks",
        "gsm8k",
        "--limit",
        "20",
        "--samples",
        "2",
        "--max-new-tokens",
        "24",
        "--no-progress",
        "--device",
        "cpu",
        "--grader-workers",
        "0",
        "--problems-per-call",
        "2",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "pasodoble.cli", "eval", *args]
    out = tmp_path / "killed"
    samples = out / "samples.jsonl"
    proc = subprocess.Popen(
        [*cmd, "--out", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if samples.exists() and len(samples.read_text().splitlines()) >= 2 * 6:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the evaluation finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(
        {json.loads(x)["problem_id"] for x in samples.read_text().splitlines() if x.endswith("}")}
    )
    assert 6 <= done_before < 20 and not (out / "results.json").exists()

    subprocess.run([*cmd, "--out", str(out)], env=env, check=True, capture_output=True)
    resumed = json.loads((out / "results.json").read_text())
    assert resumed["reused_problems"] >= done_before - 1  # a torn last problem may be regenerated
    assert resumed["generated_problems"] == 20 - resumed["reused_problems"]

    with torch.random.fork_rng():
        before = torch.get_num_threads()
        try:
            assert main(["eval", *args, "--out", str(tmp_path / "straight")]) == 0
        finally:
            torch.set_num_threads(before)
    straight = json.loads((tmp_path / "straight" / "results.json").read_text())
    assert resumed["benchmarks"] == straight["benchmarks"]
    ref_lines = sorted((tmp_path / "straight" / "samples.jsonl").read_text().splitlines())
    assert sorted(samples.read_text().splitlines()) == ref_lines


# --------------------------------------------------------------------------------------------------
# --extract strict|flexible (eval.extract)


def test_cli_extract_flexible_for_base_model_answers(tmp_path, capsys, monkeypatch):
    """Base-model answers ending in ``A: N``: strict finds none, flexible takes the last number; the mode
    is recorded, checked on resume, read from --train-config, and re-grading reproduces the numbers."""
    from pasodoble.eval import runner

    bench = tmp_path / "qa.jsonl"
    golds = {"Eggs left?": "18", "Cups?": "5", "Legs?": "1,200"}
    bench.write_text("".join(json.dumps({"problem": p, "answer": a}) + "\n" for p, a in golds.items()))

    def fake_generate(self, requests, n):  # sample 0 right, sample 1 off by one
        out = []
        for r in requests:
            gold = int(golds[r.problem].replace(",", ""))
            out.append([f"We count {gold - 2} and 2 more.\nA: {gold + i:,}" for i in range(n)])
        return out

    monkeypatch.setattr(runner.BackendGenerator, "__call__", fake_generate)
    base = ["eval", "--model", "tiny", "--benchmarks", str(bench), "--samples", "2", "--grader-workers", "0"]
    base += ["--no-progress", "--device", "cpu"]

    assert main([*base, "--out", str(tmp_path / "strict")]) == 0
    strict = json.loads((tmp_path / "strict" / "results.json").read_text())
    assert strict["config"]["extract"] == "strict"
    assert strict["benchmarks"]["qa"]["pass@1"] == 0.0

    out = tmp_path / "flexible"
    assert main([*base, "--extract", "flexible", "--out", str(out)]) == 0
    flexible = json.loads((out / "results.json").read_text())
    assert flexible["config"]["extract"] == "flexible"
    assert flexible["benchmarks"]["qa"]["pass@1"] == 0.5  # 3 problems x (right, wrong)
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [s["pred"] for s in samples] == ["18", "19", "5", "6", "1,200", "1,201"]

    graded = tmp_path / "graded.jsonl"
    capsys.readouterr()
    assert main(["grade", str(out / "samples.jsonl"), "--out", str(graded), "--extract", "flexible"]) == 0
    assert "accuracy: 3/6 (50.00%)" in capsys.readouterr().out

    # resuming into the same directory with the other mode would mix verdicts: refused
    assert main([*base, "--extract", "strict", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "extract: 'flexible' -> 'strict'" in err[0]

    cfg = tmp_path / "config.yaml"
    cfg.write_text("eval:\n  extract: flexible\n")
    assert main([*base, "--train-config", str(cfg), "--out", str(tmp_path / "from_cfg")]) == 0
    from_cfg = json.loads((tmp_path / "from_cfg" / "results.json").read_text())
    assert from_cfg["config"]["extract"] == "flexible" and from_cfg["benchmarks"] == flexible["benchmarks"]


def test_manifest_without_extract_resumes_as_strict(tmp_path):
    """An eval_config.json written before eval.extract existed holds a strict evaluation."""
    from pasodoble.errors import UserError

    with Grader(GraderConfig(workers=0)) as grader:
        run_eval(
            _settings(), _toy_benchmarks(), FakeGenerator(), grader.grade_batch, tmp_path, progress=False
        )
        manifest = json.loads((tmp_path / "eval_config.json").read_text())
        del manifest["identity"]["extract"]
        (tmp_path / "eval_config.json").write_text(json.dumps(manifest))
        again = run_eval(
            _settings(), _toy_benchmarks(), FakeGenerator(), grader.grade_batch, tmp_path, progress=False
        )
        assert again["generated_problems"] == 0
        with pytest.raises(UserError, match="extract: 'strict' -> 'flexible'"):
            run_eval(
                _settings(extract="flexible"),
                _toy_benchmarks(),
                FakeGenerator(),
                grader.grade_batch,
                tmp_path,
                progress=False,
            )
