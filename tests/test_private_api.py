"""imgcls uses its dependencies through their public API only.

A private name (``_name``) of another package can change in any release. Where no public way
exists, the private use lives in one module per upstream whose name ends in ``compat``, with a
test of its own that fails, naming the upstream, when that upstream changes. This test scans
every other module of the package for:

- imports of a private module or name: ``from x._y import z``, ``from x import _y``;
- ``obj._name`` where ``_name`` is defined nowhere in imgcls (so it is someone else's);
- ``self._name`` in a class derived from another package's class, where that class (or one
  of its bases) has or sets ``_name``: an override of, or a reach into, its internals;
- a private module named in a string (``logging.getLogger("optuna.study._optimize")``);
- an import from a module that is another package's internals although its name has no
  underscore (``INTERNAL_MODULES``).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

from tests.helpers import ROOT

PACKAGE = ROOT / "imgcls"
PRIVATE = re.compile(r"^_[A-Za-z0-9]\w*$")  # _name, not __dunder__
# A dotted module path of a third-party package with a private part, inside a string.
# Internals without an underscore in their name: not in their package's documented API.
INTERNAL_MODULES = (
    "starlette.formparsers",
    "uvicorn.supervisors",
    "uvicorn.main",
    "onnxruntime.capi",
    "lightning.pytorch.overrides",
    "lightning.fabric.utilities.types",
    "torchvision.datasets.mnist",
)
PRIVATE_MODULE_TEXT = re.compile(r"^[a-z][a-z0-9_]*(\.[A-Za-z0-9_]+)*\._[a-z]\w*(\.\w+)*$")


def _is_private(name: str) -> bool:
    return bool(PRIVATE.match(name))


def _modules(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "compat" not in p.stem)


def _defined_private_names(files: list[Path]) -> set[str]:
    """Every ``_name`` imgcls itself defines: functions, classes, assignments and attributes
    it assigns (``x._name = ...``), parameters."""
    names: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.alias):
                names.add(node.asname or node.name)
    return {n for n in names if _is_private(n)}


def _third_party_has(cls: type, name: str) -> str | None:
    """The first non-imgcls class in ``cls``'s MRO that has or sets ``name``, or None."""
    for klass in cls.__mro__[1:]:
        module = getattr(klass, "__module__", "") or ""
        if module.startswith("imgcls") or module == "builtins":
            continue
        if name in vars(klass):
            return f"{module}.{klass.__qualname__}"
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        if re.search(rf"\bself\.{re.escape(name)}\b", source):
            return f"{module}.{klass.__qualname__}"
    return None


def _module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def private_uses(root: Path, import_classes: bool = True) -> list[str]:
    """``file:line: what`` for each private use of another package found under ``root``."""
    files = _modules(root)
    ours = _defined_private_names(files)
    top = root.name
    found: list[str] = []
    for path in files:
        rel = path.relative_to(root.parent)
        tree = ast.parse(path.read_text(), str(path))

        def flag(node: ast.AST, what: str, rel: Path = rel) -> None:
            found.append(f"{rel}:{getattr(node, 'lineno', '?')}: {what}")

        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.split(".")[0] == top:
                    continue
                if any(_is_private(part) for part in node.module.split(".")):
                    flag(node, f"from {node.module} import ...")
                elif node.module.startswith(INTERNAL_MODULES):
                    flag(node, f"from {node.module} import ...: internals")
                for alias in node.names:
                    if _is_private(alias.name):
                        flag(node, f"from {node.module} import {alias.name}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    if parts[0] != top and any(_is_private(p) for p in parts):
                        flag(node, f"import {alias.name}")
                    elif alias.name.startswith(INTERNAL_MODULES):
                        flag(node, f"import {alias.name}: internals")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
                if PRIVATE_MODULE_TEXT.match(text) and text.split(".")[0] != top:
                    flag(node, f"names a private module: {text!r}")

        # attributes, with the class each one sits in
        def visit(node: ast.AST, cls_name: str | None, rel: Path = rel, path: Path = path) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.ClassDef):
                    visit(child, child.name if cls_name is None else None)
                    continue
                if isinstance(child, ast.Attribute) and _is_private(child.attr):
                    base = child.value
                    on_self = isinstance(base, ast.Name) and base.id in ("self", "cls")
                    on_super = (
                        isinstance(base, ast.Call)
                        and isinstance(base.func, ast.Name)
                        and base.func.id == "super"
                    )
                    if on_self or on_super:
                        if cls_name and import_classes:
                            module = importlib.import_module(_module_name(path, root))
                            cls = getattr(module, cls_name, None)
                            owner = _third_party_has(cls, child.attr) if cls else None
                            if owner:
                                found.append(
                                    f"{rel}:{child.lineno}: self.{child.attr} belongs to {owner}"
                                )
                    elif child.attr not in ours:
                        found.append(f"{rel}:{child.lineno}: .{child.attr} of another package")
                visit(child, cls_name)

        visit(tree, None)
    return sorted(set(found))


def test_no_private_api_outside_compat_modules() -> None:
    found = private_uses(PACKAGE)
    assert not found, (
        "private API of another package used outside a *compat* module; use the public API, "
        "or move the use into that upstream's compat module with a test:\n" + "\n".join(found)
    )


def test_the_scan_finds_each_kind_of_private_use(tmp_path: Path) -> None:
    """The scan above can fail: each kind of private use, planted in a package, is found."""
    pkg = tmp_path / "pkgx"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "bad.py").write_text(
        "import logging\n"
        "from optuna.study._optimize import _optimize\n"
        "from lightning.fabric.utilities.types import _PATH\n"
        "import starlette._utils\n"
        "from uvicorn.supervisors import Multiprocess\n"
        "log = logging.getLogger('optuna.study._optimize')\n"
        "def f(study, trial):\n"
        "    return study._storage, trial._trial_id\n"
    )
    (pkg / "fine_compat.py").write_text("def f(study):\n    return study._storage\n")
    (pkg / "good.py").write_text(
        "class A:\n"
        "    def __init__(self):\n"
        "        self._mine = 1\n"
        "    def g(self, other: 'A'):\n"
        "        return other._mine, self.__class__\n"
    )
    found = private_uses(pkg, import_classes=False)
    assert all(f.startswith("pkgx/bad.py:") for f in found), found
    assert {f.split(": ", 1)[1] for f in found} == {
        "from optuna.study._optimize import ...",
        "from optuna.study._optimize import _optimize",
        "from lightning.fabric.utilities.types import _PATH",
        "from lightning.fabric.utilities.types import ...: internals",
        "import starlette._utils",
        "from uvicorn.supervisors import ...: internals",
        "names a private module: 'optuna.study._optimize'",
        "._storage of another package",
        "._trial_id of another package",
    }


@pytest.mark.parametrize("name", ["_experiment", "_fs"])
def test_a_reach_into_a_base_class_is_found(name: str) -> None:
    """``self._name`` of a Lightning base class is found through the class's MRO."""
    from lightning.pytorch.loggers import CSVLogger

    class Sub(CSVLogger):
        pass

    assert _third_party_has(Sub, name) is not None
    assert _third_party_has(Sub, "_imgcls_never_defined") is None
