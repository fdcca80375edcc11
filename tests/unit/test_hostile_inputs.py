"""Issue 22, hostile inputs (second round): one test per class, each with the issue's examples and our own.

Each test name starts with the class it covers (``class1_`` ... ``class12_``, ``also_``). Command-line
cases that need a subprocess are in ``tests/integration/test_hostile_cli.py``.
"""

from __future__ import annotations

import pytest

from pasodoble.verify import answers_equivalent


# ---------------------------------------------------------------------------------------------- class 1
@pytest.mark.parametrize(
    "pred, gold, expected",
    [
        ("4000000000.0", "4000000003", False),  # issue
        ("1234567891.0", "1234567890", False),  # issue
        ("123456789012.5", "123456789012.4", False),  # ours: one tenth apart at 1.2e11
        ("2.0e10", "20000000000", True),  # equal values stay equal at any size
        ("1234567890.0000001", "1234567890", True),  # within 6 decimal places
        ("0.333333", "\\frac{1}{3}", True),  # the documented 6-place rule is unchanged
        ("1e-7", "2e-7", False),  # and the relative rule below 0.01
        ("1.0000000001e-5", "1e-5", True),
    ],
)
def test_class1_large_numbers_compare_exactly(pred, gold, expected):
    assert answers_equivalent(pred, gold) is expected


# ---------------------------------------------------------------------------------------------- class 6
@pytest.mark.parametrize(
    "pred, gold",
    [
        ("\\textbf{(C)} and \\textbf{(D)}", "C"),  # issue
        ("C D E", "C"),  # issue
        ("(C)(D)", "C"),  # issue
        ("C (or maybe D)", "C"),  # issue
        ("6 = 5", "5"),  # issue
        ("2, 2", "2"),  # issue
        ("\\text{(B) or (C)}", "B"),  # ours
        ("(b) (c)", "B"),  # ours: lower-case options in parentheses
        ("2 + 3 = 6", "6"),  # ours: a false equation through math-verify
        ("3, 4", "4"),  # ours: two values for one
        ("x + 1 = 5", "5"),  # ours: a left side that is not a name is a claim (x = 4)
    ],
)
def test_class6_hedged_answers_and_false_equations_match_nothing(pred, gold):
    assert answers_equivalent(pred, gold) is False


@pytest.mark.parametrize(
    "pred, gold",
    [
        ("(C) 12", "C"),
        ("\\textbf{(C)} $\\triangle ABC$", "C"),  # letters inside a word are not options
        ("Option C", "C"),
        ("x = 5", "5"),  # an assignment still matches its value
        ("2 + 3 = 5", "5"),  # a true equation ending in the gold
        ("\\frac{10}{2} = 5", "5"),
        ("-2, 1", "1, -2"),
    ],
)
def test_class6_single_answers_and_true_equations_still_match(pred, gold):
    assert answers_equivalent(pred, gold) is True


# ---------------------------------------------------------------------------------------------- also
@pytest.mark.parametrize(
    "pred, gold",
    [
        ("3²", "3^2"),  # issue
        ("x²", "x^2"),  # issue
        ("10⁶", "10^6"),  # issue
        ("½", "\\frac12"),  # issue
        ("⅓", "\\frac{1}{3}"),  # issue
        ("√(3)", "\\sqrt{3}"),  # issue
        ("\\boxed{1\u200b2}", "12"),  # issue: a zero-width space inside the box
        ("x⁻¹", "\\frac{1}{x}"),  # ours
        ("2½", "\\frac{5}{2}"),  # ours: a mixed number
        ("a₁ + a₂", "a_1 + a_2"),  # ours: subscripts
        ("185\\", "185"),  # issue: a stray backslash
        ("42.\\", "42"),  # ours
    ],
)
def test_also_unicode_forms_and_stray_backslash_match_latex(pred, gold):
    assert answers_equivalent(pred, gold) is True


@pytest.mark.parametrize(
    "pred, gold",
    [
        ("\\sin(x)=\\frac{42}{59}", "\\cos(x)=\\frac{42}{59}"),  # issue: the left sides differ
        ("\\log(y) = 2", "\\ln(y) = 2"),  # ours: log is base 10 in math-verify
        ("3²", "3^3"),
        ("⅔", "\\frac{1}{3}"),
        ("90º", "90^{o}"),  # an ordinal indicator is not a superscript letter
    ],
)
def test_also_equation_left_sides_and_unicode_mismatches(pred, gold):
    assert answers_equivalent(pred, gold) is False


# ---------------------------------------------------------------------------------------------- class 2
def test_class2_string_overrides_take_the_text_verbatim():
    from pasodoble.config import load_config

    cfg = load_config(
        None,
        [
            "run.name=007",  # issue: was '7'
            "run.out_dir=017",  # issue: was '15' (octal)
            "run.project=12:30",  # issue: was '750' (base 60)
            "knowledge.split=yes",  # issue: was 'True'
            "solver.prompt=Solve {problem} #steps",  # issue: ' #' cut the prompt
            "proposer.prompt=Use {snippet}\nthen write",  # issue: a newline became a space
            "knowledge.text_field=0x1F",  # ours: hex stays text
        ],
    )
    assert cfg.run.name == "007" and cfg.run.out_dir == "017" and cfg.run.project == "12:30"
    assert cfg.knowledge.split == "yes"
    assert cfg.solver.prompt == "Solve {problem} #steps"
    assert cfg.proposer.prompt == "Use {snippet}\nthen write"
    assert cfg.knowledge.text_field == "0x1F"


def test_class2_typed_overrides_parse_by_the_field_type():
    from pasodoble.config import load_config

    cfg = load_config(None, ["run.max_steps=017", "proposer.learning_rate=1e-5", "run.progress=no"])
    assert cfg.run.max_steps == 17 and cfg.proposer.learning_rate == 1e-5 and cfg.run.progress is False
    cfg = load_config(None, ["run.name=null", "run.out_dir=~", "eval.limit=null"])
    # null is None only where a field may be null; for a str field "~" is text (train expands it)
    assert cfg.run.name is None and cfg.run.out_dir == "~" and cfg.eval.limit is None


def test_class2_run_out_dir_tilde_is_expanded_by_train(tmp_path, monkeypatch):
    from pasodoble.config import load_config
    from pasodoble.errors import UserError
    from pasodoble.train import run_training

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "mine.txt").write_text("keep")
    # the refusal names the expanded directory: the run looked at $HOME/x, not at ./~/x
    with pytest.raises(UserError, match=f"run.out_dir={tmp_path}/x is not empty"):
        run_training(load_config(None, ["run.out_dir=~/x"]))


# ---------------------------------------------------------------------------------------------- class 4
@pytest.mark.parametrize(
    "override, field",
    [
        ("proposer.learning_rate=inf", "proposer.learning_rate"),  # issue
        ("solver.adam_beta1=1.5", "solver.adam_beta1"),  # issue
        ("proposer.adam_beta2=nan", "proposer.adam_beta2"),  # issue
        ("solver.weight_decay=nan", "solver.weight_decay"),  # issue
        ("rewards.difficulty_offset=-inf", "rewards.difficulty_offset"),  # ours
        ("grpo.epsilon_high=inf", "grpo.epsilon_high"),  # ours
        ("model.lora.alpha=nan", "model.lora.alpha"),  # ours: a nested section
        ("solver.weight_decay=-0.1", "solver.weight_decay"),  # ours
    ],
)
def test_class4_non_finite_or_out_of_range_floats_are_refused(override, field):
    from pasodoble.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(None, [override])


def test_class4_sft_learning_rate_must_be_finite(tmp_path):
    from pasodoble.errors import UserError
    from pasodoble.sft.train import SFTConfig, train_sft

    for lr in (float("inf"), float("nan")):  # issue: inf wrote non-finite weights
        with pytest.raises(UserError, match="--lr"):
            train_sft(
                SFTConfig(model="tiny", data=str(tmp_path / "none.jsonl"), out=str(tmp_path / "o"), lr=lr)
            )
    with pytest.raises(UserError, match="--seed must be in 0..4294967295"):  # ours: sft --seed -1
        train_sft(
            SFTConfig(model="tiny", data=str(tmp_path / "none.jsonl"), out=str(tmp_path / "o"), seed=-1)
        )
    with pytest.raises(UserError, match="--weight-decay"):  # ours
        train_sft(
            SFTConfig(
                model="tiny",
                data=str(tmp_path / "none.jsonl"),
                out=str(tmp_path / "o"),
                weight_decay=float("nan"),
            )
        )
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------- class 9
def test_class9_cap_tokens_tokenizes_a_bounded_prefix():
    from pasodoble.knowledge import cap_tokens
    from pasodoble.testing.tiny import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    seen: list[int] = []

    class Counting:
        def __call__(self, text, **kw):
            seen.append(len(text))
            return tok(text, **kw)

        def decode(self, *a, **kw):
            return tok.decode(*a, **kw)

    text = "3 + 4 = 7 and 12 - 5 = 7. " * 400_000  # 10.4 M characters (the record was 20 MB)
    capped = cap_tokens(text, Counting(), 64)
    assert max(seen) <= 8 * (64 + 16) * 4  # not the whole record
    head = text[:5000]
    assert capped == tok.decode(
        tok(head, add_special_tokens=False)["input_ids"][:64], skip_special_tokens=True
    )
    # ours: text of long tokens (whitespace runs) grows the prefix until it holds enough tokens
    spaced = ("7" + " " * 300) * 2000
    capped = cap_tokens(spaced, Counting(), 10)
    assert capped == tok.decode(
        tok(spaced, add_special_tokens=False)["input_ids"][:10], skip_special_tokens=True
    )
    assert cap_tokens("1 + 1 = 2", tok, 64) == "1 + 1 = 2"


def test_class9_grader_workers_capped_by_pairs_and_cores():
    import os

    from pasodoble.config import GraderConfig
    from pasodoble.verify import Grader

    with Grader(GraderConfig(workers=64, cache_size=0)) as g:  # issue: 65 processes for 2 lines
        v = g.grade_batch(["x^2 + 2x + 1", "\\sin(x)^2"], ["(x+1)^2", "1 - \\cos(x)^2"], extracted=True)
        assert [x.correct for x in v] == [True, True]
        assert len(g._workers) <= min(2, os.cpu_count() or 1)
    with Grader(GraderConfig(workers=64, cache_size=0)) as g:  # ours: one slow pair, one worker
        g.grade_batch(["\\sqrt{8}"], ["2\\sqrt{2}"], extracted=True)
        assert len(g._workers) == 1


# --------------------------------------------------------------------------------------------- class 10
@pytest.mark.parametrize("value", ["inf", "1e12", "nan", "0"])
def test_class10_grader_timeout_out_of_range_is_refused(value):
    from pasodoble.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"grader\.timeout_s must be (a finite number|in \(0, 86400\])"):
        load_config(None, [f"grader.timeout_s={value}"])


def test_class10_in_process_check_survives_a_huge_timeout():
    # ours: the API without a validated config (answers_equivalent's timeout_s) no longer overflows
    assert answers_equivalent("\\frac{2}{4}", "0.5", timeout_s=float("inf")) is True
    assert answers_equivalent("x^2 - 1", "(x-1)(x+1)", timeout_s=1e12) is True


# --------------------------------------------------------------------------------------------- class 12
@pytest.mark.parametrize("value", ["-5", "99999999999999999999999", "4294967296"])
def test_class12_run_seed_out_of_range_is_refused_with_the_range(value):
    from pasodoble.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"run\.seed must be in 0\.\.4294967295"):
        load_config(None, [f"run.seed={value}"])
    assert load_config(None, ["run.seed=4294967295"]).run.seed == 2**32 - 1


@pytest.mark.parametrize(
    "content, needle",
    [
        ("run:\n  seed: 1\n".encode("utf-16"), "not UTF-8 text"),  # issue: UTF-16
        (bytes(range(256)) * 4, "not UTF-8 text"),  # issue: binary
        (b"run:\n  max_steps: " + b"9" * 5000 + b"\n", "holds a value YAML cannot read"),  # issue
        (b"run: " + b"[" * 10000 + b"]" * 10000 + b"\n", "nested too deeply"),  # issue
        (b"\xef\xbb\xbfrun:\n  max_steps: 3\n", None),  # ours: a UTF-8 byte-order mark is fine
        (b"run: {max_steps: 3\n", "is not valid YAML"),  # ours
        (b"run:\n  seed: 1" + b"0" * 50 + b"\n", "run.seed must be in 0"),  # ours: 51 digits
    ],
)
def test_class12_bad_config_files_are_one_line_errors(tmp_path, content, needle):
    from pasodoble.config import ConfigError, load_config

    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    if needle is None:
        assert load_config(path).run.max_steps == 3
        return
    with pytest.raises(ConfigError, match=needle) as info:
        load_config(path)
    assert "\n" not in str(info.value) and len(str(info.value)) < 300


# ---------------------------------------------------------------------------------------------- also
@pytest.mark.parametrize("values", [[1, 2, 3], [1.5, 2.5]])  # issue: integers; ours: floats
def test_also_a_non_text_parquet_column_names_its_type(tmp_path, values):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pasodoble.config import KnowledgeConfig
    from pasodoble.errors import UserError
    from pasodoble.knowledge import KnowledgeBase

    path = tmp_path / "k.parquet"
    pq.write_table(pa.table({"text": values}), path)
    with pytest.raises(UserError, match="column 'text' holds .*, not text"):
        KnowledgeBase(KnowledgeConfig(source=str(path))).sample(None)


def test_class6_one_value_in_several_forms_is_not_a_list():
    # MATH-500 number_theory/459's reference solution boxes the value twice, in two forms
    assert answers_equivalent("15\\frac{39}{40}, \\frac{639}{40}", "\\frac{639}{40}") is True
    assert answers_equivalent("0.5, \\frac{1}{2}", "0.5") is True
    assert answers_equivalent("2, 2", "2") is False  # the same form twice is a list of two
    assert answers_equivalent("0.5, \\frac{1}{3}", "0.5") is False
