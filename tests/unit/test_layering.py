"""Layering: only the modules that orchestrate a run take the whole ``Config``; components take their own
section or plain arguments (issue 25; design.md: "Only a recipe sees the whole config").

The check reads every module's source (no imports): a function parameter annotated ``Config`` (or a
string annotation naming it) outside the allowed modules fails, naming the function.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "pasodoble"

# The modules that see a whole run: its entry points and its planners.
ORCHESTRATORS = {
    "api.py",  # the Python API: one function per command
    "config.py",  # the config itself (loading, validation, the resume policy, Config.role)
    "train.py",  # the run: builds every component from its section
    "dual_play.py",  # one step of the method, over both roles
    "fork.py",  # a new run from another run's checkpoint: compares the two runs' configs
    "toy/demo.py",  # the demo: builds a run's config
}
ORCHESTRATOR_PACKAGES = (
    "commands/",  # the CLI
    "topology/",  # placement and memory of a whole run (every section's sizes enter the plan)
)


def _annotation_names_config(node: ast.expr | None) -> bool:
    if node is None:
        return False
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return any(part.strip() == "Config" for part in node.value.replace("|", ",").split(","))
    return any(isinstance(n, ast.Name) and n.id == "Config" for n in ast.walk(node))


def whole_config_parameters(root: Path = SRC) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel in ORCHESTRATORS or rel.startswith(ORCHESTRATOR_PACKAGES):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
                for arg in args:
                    if _annotation_names_config(arg.annotation):
                        found.append(f"{rel}:{node.lineno} {node.name}({arg.arg}: Config)")
    return found


def test_no_module_below_the_orchestrators_takes_a_whole_config():
    assert whole_config_parameters() == []


def test_the_check_finds_a_whole_config_parameter(tmp_path):
    """The check can fail: a component taking ``cfg: Config`` is reported, a section is not."""
    (tmp_path / "component.py").write_text("def build(cfg: Config, n: int) -> None: ...\n")
    (tmp_path / "other.py").write_text("def build(section: 'RolloutConfig | None') -> None: ...\n")
    (tmp_path / "train.py").write_text("def run(cfg: 'Config') -> None: ...\n")  # an orchestrator
    assert whole_config_parameters(tmp_path) == ["component.py:1 build(cfg: Config)"]
