"""The data modules by data set name, and the one a checkpoint was trained with.

``DATAMODULES`` maps a model's ``dataset`` hyper-parameter to its data module: ``mnist`` and
``fashion_mnist`` (IDX files under a data root) and ``folder`` (a folder of images per class,
``imgcls.data.folder``). ``trained_datamodule`` rebuilds, from a checkpoint's
``datamodule_hyper_parameters``, the data module whose held-out images the export stage checks
and calibrates on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from imgcls.data.datamodule import FashionMNISTDataModule, ImageDataModule, MNISTDataModule
from imgcls.data.folder import ImageFolderDataModule
from imgcls.data.provision import get_spec
from imgcls.errors import DataError

__all__ = ["DATAMODULES", "get_datamodule", "trained_datamodule"]

DATAMODULES: dict[str, type[ImageDataModule]] = {
    "mnist": MNISTDataModule,
    "fashion_mnist": FashionMNISTDataModule,
    "folder": ImageFolderDataModule,
}


def get_datamodule(dataset: str, **kwargs: Any) -> ImageDataModule:
    """The data module of ``dataset``; for ``folder``, ``data_dir`` is the folder's root."""
    if dataset == ImageFolderDataModule.dataset_name:
        root = kwargs.pop("data_dir", None)
        if root is not None:
            kwargs["root"] = str(root)
        if not kwargs.get("root"):
            raise DataError(
                "a folder data set needs its root: pass the folder that holds train/<class>/ "
                "(--data_dir ROOT)"
            )
        return ImageFolderDataModule(**kwargs)
    get_spec(dataset)  # raises with the list of valid names
    return DATAMODULES[dataset](**kwargs)


def trained_datamodule(
    dataset: str,
    trained_with: Mapping[str, Any] | None,
    data_dir: str | None = None,
    class_names: Sequence[str] | None = None,
    **kwargs: Any,
) -> ImageDataModule:
    """The data module a checkpoint was trained with (``trained_with``: its
    ``datamodule_hyper_parameters``), for its held-out images; ``kwargs`` override (e.g.
    ``val_size``, ``seed``).

    For ``folder``: the recorded root and framing, or ``data_dir`` as the root (a folder that
    moved). For the IDX data sets: ``data_dir`` is the data root, as always. ``class_names``:
    the model's; a folder whose classes are not those, in that order, is refused before any
    image is decoded (a renamed class folder would shift every label).

    Raises:
        DataError: a folder checkpoint that records no root, and no ``data_dir`` given; a
            folder whose classes differ from ``class_names``.
    """
    if dataset != ImageFolderDataModule.dataset_name:
        return get_datamodule(dataset, data_dir=data_dir, **kwargs)
    hp = dict(trained_with or {})
    root = data_dir if data_dir is not None else hp.get("root")
    if not root:
        raise DataError(
            "the checkpoint was trained on a folder of images but does not record which: pass "
            "--data_dir with the folder that holds its train/ and test/"
        )
    found = ImageFolderDataModule.classes_of({"root": str(root)})
    if class_names is not None and found is not None and list(found) != list(class_names):
        raise DataError(
            f"{root}: its classes are {list(found)!r} but the model was trained on "
            f"{list(class_names)!r} (a class folder renamed, added or removed): class k would "
            "be scored against another class's images. Name the folders as in training, or "
            "pass --data_dir with the folder the model was trained on"
        )
    framing = kwargs.pop("framing", hp.get("framing", "auto"))
    return ImageFolderDataModule(root=str(root), framing=framing, **kwargs)
