"""No dangling references: every relative link of README.md and docs/*.md resolves; every file the config's
help texts and the commands' --help name exists; docs/python-api.md documents exactly ``pasodoble.__all__``;
docs/prompts.md quotes the built-in prompts as prompts.py defines them."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

import pytest

import pasodoble

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *DOCS]

# [text](target) and ![alt](target); the target ends at whitespace or the closing parenthesis
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# a repository file named in prose: docs/x.md, configs/x.yaml, scripts/x.sh, examples/x.py, ...; or a bare x.md
REPO_PATH = re.compile(
    r"(?<![\w./-])((?:docs|configs|scripts|examples|benchmarks|constraints|tests)/[\w./-]*[\w-]\.\w+)"
)
BARE_MD = re.compile(r"(?<![\w./-])([\w-]+\.md)\b")
# bare names that are not pages of docs/: files a command writes (demo, eval) and the top-level pages
NOT_DOCS = {"report.md", "results.md", "data_card.md", "memorization.md", "README.md", "CHANGELOG.md"}


def _without_code_blocks(text: str) -> str:
    return re.sub(r"```.*?```", "", text, flags=re.S)


def relative_links(page: Path) -> list[str]:
    targets = LINK.findall(_without_code_blocks(page.read_text(encoding="utf-8")))
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


@pytest.mark.parametrize(
    "page", [p for p in PAGES if p.exists()], ids=lambda p: p.relative_to(ROOT).as_posix()
)
def test_relative_links_resolve(page):
    missing = []
    for target in relative_links(page):
        path = target.split("#", 1)[0]
        if not (page.parent / path).exists():
            missing.append(target)
    assert not missing, f"{page.relative_to(ROOT)} links to missing files: {missing}"


def _named_files(text: str) -> set[str]:
    named = set(REPO_PATH.findall(text))
    named |= {f"docs/{name}" for name in BARE_MD.findall(text) if name not in NOT_DOCS}
    return {n.rstrip(".") for n in named}


def _missing(named: set[str]) -> list[str]:
    return sorted(n for n in named if not (ROOT / n).exists())


def _config_help_texts() -> dict[str, str]:
    from pasodoble.config import Config

    texts: dict[str, str] = {}

    def walk(obj, prefix: str) -> None:
        texts[prefix.rstrip(".") or "Config"] = type(obj).__doc__ or ""
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, f"{prefix}{f.name}.")
            else:
                texts[f"{prefix}{f.name}"] = f.metadata.get("help", "")

    walk(Config(), "")
    return texts


@pytest.mark.parametrize(
    "page",
    [p for p in [*PAGES, ROOT / "tests" / "README.md"] if p.exists()],
    ids=lambda p: p.relative_to(ROOT).as_posix(),
)
def test_pages_name_only_existing_files(page):
    """A file a page names in prose (``tests/unit/toy/test_family.py``, ``benchmarks/x.py``) exists; a
    placeholder says so by its name (``configs/your_recipe.yaml``)."""
    named = {
        n for n in _named_files(_without_code_blocks(page.read_text(encoding="utf-8"))) if "your_" not in n
    }
    assert not _missing(named), f"{page.relative_to(ROOT)} names missing files: {_missing(named)}"


def test_config_help_names_only_existing_files():
    missing = {key: _missing(_named_files(text)) for key, text in _config_help_texts().items()}
    missing = {k: v for k, v in missing.items() if v}
    assert not missing, f"config help texts name missing files: {missing}"


def _all_help(parser: argparse.ArgumentParser) -> list[tuple[str, str]]:
    """``(prog, --help text)`` of a parser and of every nested subcommand."""
    out = [(parser.prog, parser.format_help())]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                out += _all_help(sub)
    return out


def test_command_help_names_only_existing_files():
    from pasodoble.cli import COMMANDS, build_parser, command_parser

    texts = [("pasodoble", build_parser().format_help())]
    for name in COMMANDS:
        texts += _all_help(command_parser(name))
    missing = {prog: _missing(_named_files(text)) for prog, text in texts}
    missing = {k: v for k, v in missing.items() if v}
    assert not missing, f"--help texts name missing files: {missing}"


def test_the_checks_find_what_they_look_for():
    """The patterns are not vacuous: they see the links and paths the docs do have."""
    assert "docs/quickstart.md" in relative_links(ROOT / "README.md")
    assert "docs/prompts.md" in _named_files(_config_help_texts()["proposer.prompt"])
    assert _missing({"docs/no-such-page.md"}) == ["docs/no-such-page.md"]
    assert "docs/method.md" in _named_files("the rules (method.md, Validity)")


def test_python_api_documents_exactly_the_public_surface():
    """Each public name has a `### \\`name...\\`` heading under ## Reference, and nothing else does."""
    text = (ROOT / "docs" / "python-api.md").read_text(encoding="utf-8")
    reference = text.split("\n## Reference\n", 1)[1]
    documented = re.findall(r"(?m)^### `([A-Za-z_][A-Za-z0-9_]*)", reference)
    assert len(documented) == len(set(documented)), "a name is documented twice"
    assert sorted(documented) == sorted(pasodoble.__all__)


def test_prompts_doc_quotes_the_built_in_prompts():
    from pasodoble import prompts

    text = (ROOT / "docs" / "prompts.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```text\n(.*?)\n```", text, flags=re.S)
    for template in (
        prompts.PROPOSER_TEMPLATE,
        prompts.PROPOSER_TEMPLATE_NO_KNOWLEDGE,
        prompts.SOLVER_TEMPLATE,
    ):
        assert template in blocks
    assert prompts.PLAIN_FORMAT.replace("\n", "\\n") in text
