"""The report package's layout: its docstring names every experiment, and its modules import
one another in one direction only, at module level."""

from __future__ import annotations

import ast
from pathlib import Path

import imgcls.insight.report as report
from imgcls.commands.report import OUT, QUICK_OUT
from imgcls.insight.report.catalogue import EXPERIMENTS
from imgcls.insight.report.running import default_runs_dir

PACKAGE = Path(report.__file__).parent


def test_docstring_lists_every_experiment() -> None:
    doc = report.__doc__ or ""
    missing = [e.name for e in EXPERIMENTS if f"``{e.name}``" not in doc]
    assert not missing


def _sibling_imports(path: Path) -> tuple[set[str], list[str]]:
    """(sibling modules imported at module level, imports inside functions)."""
    tree = ast.parse(path.read_text())
    siblings = {
        node.module.rsplit(".", 1)[-1]
        for node in tree.body
        if isinstance(node, ast.ImportFrom)
        and node.module
        and node.module.startswith("imgcls.insight.report.")
    }
    local = [
        ast.unparse(n)
        for f in ast.walk(tree)
        if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
        for n in ast.walk(f)
        if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("imgcls.insight.report")
    ]
    return siblings, local


def test_modules_import_without_cycles() -> None:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.glob("*.py"):
        siblings, local = _sibling_imports(path)
        assert not local, f"{path.name}: function-local imports of the package: {local}"
        graph[path.stem] = siblings
    done: set[str] = set()

    def visit(name: str, stack: tuple[str, ...]) -> None:
        assert name not in stack, f"import cycle: {' -> '.join((*stack, name))}"
        if name in done:
            return
        for dep in graph.get(name, ()):
            visit(dep, (*stack, name))
        done.add(name)

    for name in graph:
        visit(name, ())


def test_default_folders_are_under_the_working_directory() -> None:
    """``imgcls report`` writes docs/report and runs/report under the folder it runs in."""
    for folder in (OUT, QUICK_OUT, default_runs_dir(False), default_runs_dir(True)):
        assert not Path(folder).is_absolute()
