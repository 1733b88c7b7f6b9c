"""Data: provisioning of the IDX files and the LightningDataModules (MNIST, Fashion-MNIST and
a folder of images per class).

Imports are lazy so that ``imgcls.data.provision`` (used by the torch-free runtime commands)
does not pull in torch and Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DATAMODULES": "imgcls.data.registry",
    "FashionMNISTDataModule": "imgcls.data.datamodule",
    "ImageDataModule": "imgcls.data.datamodule",
    "ImageFolderDataModule": "imgcls.data.folder",
    "MNISTDataModule": "imgcls.data.datamodule",
    "TensorImageDataset": "imgcls.data.datamodule",
    "get_datamodule": "imgcls.data.registry",
    "trained_datamodule": "imgcls.data.registry",
    "DATASETS": "imgcls.data.provision",
    "DataError": "imgcls.data.provision",
    "default_root": "imgcls.data.provision",
    "fetch": "imgcls.data.provision",
    "verify": "imgcls.data.provision",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'imgcls.data' has no attribute {name!r}")
