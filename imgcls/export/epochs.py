"""The snapshots of a run (``imgcls fit --snapshots.epochs``) exported for ``imgcls page
--epochs``: each ``<run>/snapshots/epoch=N.ckpt`` through ``export_checkpoint``, with the
same gates as any export (the ONNX checker, then parity of the model and of its feature-map
model with PyTorch through onnxruntime), on the first ``parity_images`` test images rather
than all 10,000: a snapshot is looked at, not deployed, and the full set would cost a page
build a minute per snapshot."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from imgcls.export.pipeline import export_checkpoint

__all__ = ["PARITY_IMAGES", "export_snapshots"]

PARITY_IMAGES = 500


def export_snapshots(
    snapshots: dict[int, Path],
    work: str | os.PathLike[str],
    *,
    parity_images: int = PARITY_IMAGES,
    data_dir: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] = print,
) -> dict[int, Path]:
    """Export each snapshot (epoch -> ``epoch=N.ckpt``) into ``work/epoch=N``.

    Returns:
        epoch -> its export folder (``model.onnx``, ``model.features.onnx`` for a net with
        conv layers, ``metadata.json``, ``parity.json``).

    Raises:
        CheckpointError, DataError, ExportError, GateError: as ``export_checkpoint``.
    """
    out: dict[int, Path] = {}
    for epoch, ckpt in snapshots.items():
        log(f"[imgcls page] epoch {epoch}: exporting {ckpt} (gates on {parity_images} test images)")
        folder = Path(work) / f"epoch={epoch}"
        export_checkpoint(
            ckpt, folder, data_dir=data_dir, parity_subset=parity_images, log=lambda _: None
        )
        out[epoch] = folder
    return out
