"""Fixtures of the training tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import write_tiny_dataset


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """Tiny MNIST files shared by a module's runs (as conftest's ``tiny_data``), and the
    environment that pins them for a subprocess."""
    work = tmp_path_factory.mktemp("tiny")
    specs = {"mnist": write_tiny_dataset(work / "data", "MNIST")}
    (work / "specs.json").write_text(json.dumps(specs))
    return work / "data", {"IMGCLS_DATASET_SPECS": str(work / "specs.json")}
