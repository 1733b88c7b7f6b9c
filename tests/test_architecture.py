"""The layers of the tree, checked by import-linter: the contracts in pyproject.toml hold on
the package, and breaking each of them is seen, by that contract and no other (so the suite,
like ``nox -s lint``, refuses it)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

CONTRACTS = ("deploy-torch-free", "commands-torch-free", "layers", "acyclic")


def _lint_imports(config: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("lint-imports")
    if not exe.is_file():
        pytest.fail(
            f"lint-imports is not installed beside {sys.executable}: pip install -e '.[dev]'"
        )
    return subprocess.run(
        [str(exe), "--no-cache", "--no-logo", *args, str(config)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": str(exe.parent), "PYTHONPATH": str(cwd)},
    )


def test_the_package_keeps_every_contract() -> None:
    proc = _lint_imports(ROOT / "pyproject.toml", ROOT)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "Contracts: 4 kept, 0 broken." in proc.stdout


def _copy_package(tmp: Path) -> Path:
    shutil.copytree(ROOT / "imgcls", tmp / "imgcls", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", tmp / "pyproject.toml")
    return tmp


def _broken(src: Path) -> set[str]:
    """The ids of the contracts that the tree in ``src`` breaks, one lint-imports run each."""
    broken = set()
    for contract in CONTRACTS:
        proc = _lint_imports(src / "pyproject.toml", src, "--contract", contract)
        assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-2000:]
        if proc.returncode == 1:
            assert "Contracts: 0 kept, 1 broken." in proc.stdout, proc.stdout[-3000:]
            broken.add(contract)
    return broken


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        # torch in the deployment side, which the torch-free commands import
        ("deploy/metadata.py", "import torch", {"deploy-torch-free", "commands-torch-free"}),
        # the deployment side reaching up into the training side
        (
            "deploy/metadata.py",
            "import imgcls.training.lightning_module",
            # and a cycle: the training package reads IDX files through the deployment side
            {"deploy-torch-free", "commands-torch-free", "layers", "acyclic"},
        ),
        # a torch-free command loading a checkpoint
        ("commands/infer.py", "import imgcls.training.checkpoint_io", {"commands-torch-free"}),
        # a lower layer importing a higher one that imports it back: an arrow up and a cycle
        ("models/registry.py", "import imgcls.export", {"layers", "acyclic"}),
        ("training/lightning_module.py", "import imgcls.insight", {"layers", "acyclic"}),
        # a cycle inside one package (lenet registers itself in the registry)
        ("models/registry.py", "import imgcls.models.lenet", {"acyclic"}),
    ],
)
def test_breaking_a_contract_fails(
    tmp_path: Path, module: str, line: str, broken: set[str]
) -> None:
    src = _copy_package(tmp_path)
    assert _broken(src) == set()
    path = src / "imgcls" / module
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    assert _broken(src) == broken
