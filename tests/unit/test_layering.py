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


# --------------------------------------------------------------------------------------------------
# The test suite's own layout (tests/README.md): unit tests mirror the package, helpers import by package
# name, never through sys.path edits.

TESTS = Path(__file__).resolve().parents[1]


def sys_path_edits(root: Path = TESTS) -> list[str]:
    """Every ``sys.path.insert/append/extend(...)``, ``sys.path = ...`` and ``sys.path += ...`` under root."""
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            target = None
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                target = node.func.value
            elif isinstance(node, ast.Assign | ast.AugAssign):
                target = node.targets[0] if isinstance(node, ast.Assign) else node.target
            if isinstance(target, ast.Subscript):
                target = target.value
            if (
                isinstance(target, ast.Attribute)
                and target.attr == "path"
                and isinstance(target.value, ast.Name)
                and target.value.id == "sys"
            ):
                found.append((rel, node.lineno))
    return [f"{rel}:{line}" for rel, line in sorted(found)]


def misplaced_test_files(tests: Path = TESTS, src: Path = SRC) -> list[str]:
    """What breaks the layout: a unit-test directory with no package directory of the same path under
    src/pasodoble, a module in tests/unit or tests/integration that is not a test (helpers belong in
    tests/fakes or tests/integration/workers), a directory of Python files without ``__init__.py``."""
    found = []
    unit = tests / "unit"
    for path in sorted(unit.rglob("*.py")):
        rel = path.relative_to(unit)
        if not (src / rel.parent).is_dir():
            found.append(f"unit/{rel.as_posix()}: no package directory src/pasodoble/{rel.parent.as_posix()}")
    for part in ("unit", "integration"):
        for path in sorted((tests / part).rglob("*.py")):
            rel = path.relative_to(tests)
            if "workers" in rel.parts or path.name in ("__init__.py", "conftest.py"):
                continue
            if not path.name.startswith("test_"):
                found.append(
                    f"{rel.as_posix()}: not a test module (helpers: tests/fakes, tests/integration/workers)"
                )
    for directory in sorted({p.parent for p in tests.rglob("*.py")}):
        if not (directory / "__init__.py").is_file():
            found.append(f"{directory.relative_to(tests).as_posix() or '.'}/: no __init__.py")
    return found


def test_no_test_module_edits_sys_path():
    assert sys_path_edits() == []


def test_unit_tests_mirror_the_package_and_every_test_directory_is_a_package():
    assert misplaced_test_files() == []


def test_the_layout_checks_can_fail(tmp_path):
    """A sys.path edit is found; so are a unit-test directory that is no package directory, a helper
    among the tests, and a test directory without ``__init__.py``."""
    (tmp_path / "a.py").write_text(
        "import sys\nsys.path.insert(0, 'x')\nsys.path += ['y']\nsys.path[:0] = ['z']\n"
    )
    (tmp_path / "b.py").write_text("import sys\nprint(sys.path[0])\nx = [1]\nx.append(2)\n")
    assert sys_path_edits(tmp_path) == ["a.py:2", "a.py:3", "a.py:4"]
    src, tests = tmp_path / "src", tmp_path / "tests"
    (src / "rollout").mkdir(parents=True)
    for rel in ("__init__.py", "unit/__init__.py", "unit/rollout/__init__.py", "unit/rollout/test_hf.py"):
        (tests / rel).parent.mkdir(parents=True, exist_ok=True)
        (tests / rel).write_text("")
    assert misplaced_test_files(tests, src) == []
    (tests / "unit" / "toy").mkdir()
    (tests / "unit" / "toy" / "test_family.py").write_text("")
    (tests / "integration").mkdir()
    (tests / "integration" / "helper.py").write_text("")
    assert misplaced_test_files(tests, src) == [
        "unit/toy/test_family.py: no package directory src/pasodoble/toy",
        "integration/helper.py: not a test module (helpers: tests/fakes, tests/integration/workers)",
        "integration/: no __init__.py",
        "unit/toy/: no __init__.py",
    ]
