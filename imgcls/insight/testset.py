"""The official test set as uint8 tensors, for the insight commands (never re-split)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from imgcls.insight import InsightError

__all__ = ["TestSet", "load_test_set"]


@dataclass
class TestSet:
    dataset: str
    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64
    class_names: list[str]

    __test__ = False  # not a pytest class

    def __len__(self) -> int:
        return len(self.labels)


def load_test_set(
    dataset: str, data_dir: str | os.PathLike[str] | None = None, limit: int | None = None
) -> TestSet:
    """The first ``limit`` (default all) images of ``dataset``'s official test set, in order.

    Raises:
        InsightError: ``data_dir`` given but missing, or ``limit`` < 1.
        DataError: the data set is absent and cannot be fetched, or its files are corrupted.
    """
    from imgcls.data import get_datamodule

    if data_dir is not None and not Path(data_dir).is_dir():
        raise InsightError(
            f"{data_dir}: data directory not found "
            f"(fetch the data with `imgcls data fetch --dataset {dataset} --data_dir {data_dir}`)"
        )
    if limit is not None and limit < 1:
        raise InsightError(f"the test-image limit must be >= 1, got {limit}")
    try:
        dm = get_datamodule(
            dataset, data_dir=str(data_dir) if data_dir is not None else None, val_size=0
        )
    except ValueError as e:  # unknown data set name: the message lists the valid ones
        raise InsightError(str(e)) from e
    dm.prepare_data()
    dm.setup("test")
    assert dm.test_set is not None
    images, labels = dm.test_set.images, dm.test_set.labels
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return TestSet(dataset, images, labels, list(dm.class_names))
