"""Data: provisioning of the IDX files and the LightningDataModules."""

from imgcls.data.datamodule import (
    DATAMODULES,
    FashionMNISTDataModule,
    ImageDataModule,
    MNISTDataModule,
    TensorImageDataset,
    get_datamodule,
)
from imgcls.data.provision import DATASETS, DataError, default_root, fetch, verify

__all__ = [
    "DATAMODULES",
    "DATASETS",
    "DataError",
    "FashionMNISTDataModule",
    "ImageDataModule",
    "MNISTDataModule",
    "TensorImageDataset",
    "default_root",
    "fetch",
    "get_datamodule",
    "verify",
]
