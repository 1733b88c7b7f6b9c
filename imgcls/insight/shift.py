"""Translation robustness: test accuracy when every image is shifted by 0…k pixels, zero fill.

Lecture 002 shows the point: an MLP at 97 % falls to 87 % after a 1-pixel shift and 62 %
after 2, while a CNN keeps 98 % and 92 % — convolution and pooling make it (nearly)
translation invariant. Here each distance d is tried in all 8 compass directions
(``imgcls.data.transforms.DIRECTIONS``; a diagonal step of d moves d rows *and* d columns),
giving the mean and the worst direction per distance.

Models are anything with ``predict(images_uint8 (B, C, H, W)) -> labels (B,)``: a checkpoint
(``TorchPredictor``) or an exported ONNX model (``OnnxPredictor``, via
``imgcls.deploy.classifier``).
The shifts run batched on tensors with the same ``translate`` the training augmentation uses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from imgcls.data.transforms import DIRECTION_NAMES, DIRECTIONS, normalize, shift_into, translate
from imgcls.insight import InsightError
from imgcls.runs import net_label

__all__ = [
    "AXIS_DIRECTIONS",
    "DIRECTION_NAMES",
    "OnnxPredictor",
    "Predictor",
    "ShiftResult",
    "TorchPredictor",
    "evaluate_shift",
    "load_predictor",
    "shift_rows",
]

# Up, right, down, left: a move of d pixels along one axis. Lecture 002 gives one accuracy per
# shift distance without naming a direction; these moves are the ones comparable with it (a
# diagonal step of d moves the image d rows *and* d columns, √2·d pixels).
AXIS_DIRECTIONS = ("N", "E", "S", "W")
_AXIS_COLUMNS = [DIRECTION_NAMES.index(n) for n in AXIS_DIRECTIONS]


class Predictor(Protocol):
    name: str
    dataset: str
    class_names: list[str]

    def predict(self, images: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) uint8 -> (B,) int64
        ...


class TorchPredictor:
    """A checkpoint's ImageClassifier: normalises uint8 images as in training, then argmax.

    It evaluates the way the model was trained: in NHWC memory format when the checkpoint says
    ``channels_last`` (weights and inputs both: a mix would convert formats in every conv), and
    under autocast in the run's mixed precision (``precision``, else the ``trainer.precision``
    of the run's config.yaml beside ``path``), always under ``torch.inference_mode``.
    """

    def __init__(
        self,
        model: Any,
        name: str | None = None,
        path: str | os.PathLike[str] | None = None,
        precision: str | int | None = None,
    ) -> None:
        from imgcls.training.checkpoint_io import autocast_dtype, trained_precision

        self.model = model.eval()
        hp = model.hparams
        self.dataset: str = hp.dataset
        self.class_names: list[str] = list(model.class_names)
        self.mean, self.std = float(hp.mean), float(hp.std)
        self.name = name or net_label(hp.net, hp.net_args)
        self.path = Path(path) if path is not None else None
        # The net itself, not the module's forward: a compiled copy would spend its warm-up here.
        self.net = model.net
        self.channels_last = bool(hp.get("channels_last", False))
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
        if precision is None and self.path is not None:
            precision = trained_precision(self.path)
        self.precision = str(precision) if precision is not None else "32-true"
        self.device = next(self.net.parameters()).device
        self.autocast = autocast_dtype(self.precision, self.device.type)

    def _normalize(self, images: torch.Tensor) -> torch.Tensor:
        layout = torch.channels_last if self.channels_last else torch.preserve_format
        return normalize(images.to(self.device, non_blocking=True), self.mean, self.std, layout)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(
            self.device.type, dtype=self.autocast or torch.float32, enabled=bool(self.autocast)
        ):
            return self.net(x)

    def logits(self, images: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) uint8 -> (B, classes)
        with torch.inference_mode():
            return self._forward(self._normalize(images))

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits(images).argmax(dim=1)

    def predict_shifted(
        self, images: torch.Tensor, shifts: list[tuple[int, int]]
    ) -> list[torch.Tensor]:
        """``predict(translate(images, dy, dx))`` for every ``(dy, dx)``, bit for bit, with
        the batch normalised once and each shift copied into one reused buffer: the uint8
        shift and the normalisation per copy would otherwise cost a good part of a small
        net's forward."""
        with torch.inference_mode():
            base = self._normalize(images)
            buf = torch.empty_like(base)  # keeps the memory format
            fill = -self.mean / self.std  # what normalize() makes of a zero pixel
            return [
                self._forward(
                    base if dy == dx == 0 else shift_into(buf, base, dy, dx, fill)
                ).argmax(dim=1)
                for dy, dx in shifts
            ]


class OnnxPredictor:
    """An exported ONNX model run by ``imgcls.deploy.classifier.OnnxClassifier``."""

    def __init__(self, path: str | os.PathLike[str], name: str | None = None) -> None:
        path = Path(path)
        if not path.is_file():
            raise InsightError(f"{path}: ONNX model not found")
        from imgcls.deploy.classifier import OnnxClassifier
        from imgcls.errors import ModelLoadError

        try:
            self.runtime = OnnxClassifier(str(path), device="cpu")
        except ModelLoadError as e:  # a damaged file or one without imgcls metadata
            raise InsightError(f"{path}: cannot load this ONNX model: {e}") from e
        meta = dict(getattr(self.runtime, "metadata", {}) or {})
        self.dataset = str(meta.get("dataset", ""))
        self.class_names = [str(c) for c in meta.get("class_names", [])]
        net = meta.get("net")
        self.name = name or (
            f"{net_label(str(net), meta.get('net_args'))} (onnx)" if net else f"{path.stem} (onnx)"
        )
        self.path = path

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        labels, _ = self.runtime.predict(images.cpu().numpy())
        return torch.as_tensor(np.asarray(labels), dtype=torch.long)


def split_named(spec: str) -> tuple[str | None, str]:
    """``NAME=PATH`` -> (NAME, PATH); a plain path (even one containing '=') -> (None, PATH)."""
    if "=" in spec and not Path(spec).exists():
        name, path = spec.split("=", 1)
        if name and path:
            return name, path
    return None, spec


def load_predictor(
    spec: str, kind: str = "ckpt", which: str = "best"
) -> TorchPredictor | OnnxPredictor:
    """Load ``[NAME=]PATH`` as a checkpoint (``kind="ckpt"``; ``which`` of a run or experiment
    folder) or ONNX model (``kind="onnx"``).

    Raises:
        CheckpointError: a checkpoint that is missing or damaged (the message names it).
        InsightError: an ONNX file that is missing, or ONNX support that is not installed.
    """
    name, path = split_named(spec)
    if kind == "onnx":
        return OnnxPredictor(path, name)
    from imgcls.runs import resolve_checkpoint
    from imgcls.training.checkpoint_io import load_classifier

    resolved = resolve_checkpoint(path, which)
    return TorchPredictor(load_classifier(resolved), name, resolved)


def check_dataset(predictors: list[Any], dataset: str | None) -> str:
    """The one data set all ``predictors`` were trained on; ``dataset`` must match when given.

    Raises:
        InsightError: a model trained on another data set than requested, or models that disagree.
    """
    if not predictors:
        raise InsightError("no model given: pass --ckpt PATH (or --onnx PATH), repeatable")
    want = dataset or next((p.dataset for p in predictors if p.dataset), None)
    if want is None:
        raise InsightError("cannot tell which data set the models were trained on; pass --dataset")
    for p in predictors:
        if p.dataset and p.dataset != want:
            where = f" ({p.path})" if getattr(p, "path", None) else ""
            how = "requested with --dataset" if dataset else f"the data set of {predictors[0].name}"
            raise InsightError(
                f"{p.name}{where} was trained on {p.dataset!r}, but the test set is {want!r} "
                f"({how}); evaluate models of one data set at a time"
            )
    return want


@dataclass
class ShiftResult:
    """Accuracy of one model on shifted test images.

    ``accuracy[d, j]`` is the accuracy (fraction) at distance ``d`` pixels in direction
    ``DIRECTIONS[j]``; row 0 is the unshifted test set (the same value in every column).
    """

    name: str
    dataset: str
    n_images: int
    accuracy: np.ndarray  # (k+1, 8)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def max_shift(self) -> int:
        return self.accuracy.shape[0] - 1

    @property
    def mean(self) -> np.ndarray:  # (k+1,)
        return self.accuracy.mean(axis=1)

    @property
    def worst(self) -> np.ndarray:  # (k+1,)
        return self.accuracy.min(axis=1)

    @property
    def axis_mean(self) -> np.ndarray:  # (k+1,)
        """Mean accuracy over the axis-aligned moves (``AXIS_DIRECTIONS``: N, E, S, W)."""
        return self.accuracy[:, _AXIS_COLUMNS].mean(axis=1)

    @property
    def axis_worst(self) -> np.ndarray:  # (k+1,)
        """The lowest accuracy among the axis-aligned moves (N, E, S, W)."""
        return self.accuracy[:, _AXIS_COLUMNS].min(axis=1)

    def per_direction(self) -> dict[str, list[float]]:
        """{direction name: [accuracy at 0, 1, …, k px]}, in ``DIRECTION_NAMES`` order."""
        return {
            name: [float(v) for v in self.accuracy[:, j]] for j, name in enumerate(DIRECTION_NAMES)
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dataset": self.dataset,
            "n_images": self.n_images,
            "mean": [float(v) for v in self.mean],
            "worst": [float(v) for v in self.worst],
            "axis_mean": [float(v) for v in self.axis_mean],
            "axis_worst": [float(v) for v in self.axis_worst],
            "per_direction": [
                {n: float(v) for n, v in zip(DIRECTION_NAMES, row, strict=True)}
                for row in self.accuracy
            ],
            **self.extra,
        }


# Images per forward pass. On a CPU a batch whose activations stay in cache is fastest (on
# 2 cores: LeNet-5 ~33k images/s at 256 vs ~20k at 2048, the ResNet-20 ~2k vs ~1.2k); a GPU
# wants large batches to fill it.
EVAL_BATCH = {"cpu": 256, "cuda": 2048}


def eval_batch_size(device: torch.device | str | None) -> int:
    """The default evaluation batch for ``device`` (a CPU's, for anything but CUDA)."""
    return EVAL_BATCH["cuda" if torch.device(device or "cpu").type == "cuda" else "cpu"]


def evaluate_shift(
    predictor: Any,
    images: torch.Tensor,
    labels: torch.Tensor,
    max_shift: int = 3,
    batch_size: int | None = None,
    progress: bool = True,
    name: str | None = None,
) -> ShiftResult:
    """Accuracy of ``predictor`` on ``images`` (N, C, H, W) uint8 shifted 0…``max_shift`` px.

    Each batch is shifted in all 8 directions for every distance; vacated pixels are zero.
    Counts stay where the predictions are and are read once at the end: no host sync per batch.
    ``batch_size`` None: ``eval_batch_size`` of the predictor's device.
    """
    if max_shift < 0:
        raise InsightError(f"--max_shift must be >= 0, got {max_shift}")
    if len(images) == 0:
        raise InsightError("no test images to evaluate")
    device = getattr(predictor, "device", torch.device("cpu"))
    batch_size = batch_size or eval_batch_size(device)
    if batch_size < 1:
        raise InsightError(f"--batch_size must be >= 1, got {batch_size}")
    from tqdm.auto import tqdm

    n = len(images)
    images, labels = images.to(device), labels.to(device)
    counts: list[list[torch.Tensor]] = [[] for _ in range(max_shift + 1)]
    label = str(name or getattr(predictor, "name", "model"))
    steps = ((n + batch_size - 1) // batch_size) * (1 + len(DIRECTIONS) * max_shift)
    with (
        torch.inference_mode(),
        tqdm(
            total=steps, desc=f"shift {label}", unit="batch", disable=not progress, leave=False
        ) as bar,
    ):
        shifts = [(0, 0)] + [
            (d * uy, d * ux) for d in range(1, max_shift + 1) for uy, ux in DIRECTIONS
        ]
        for start in range(0, n, batch_size):
            x, y = images[start : start + batch_size], labels[start : start + batch_size]
            if hasattr(predictor, "predict_shifted"):
                preds = predictor.predict_shifted(x, shifts)
            else:
                preds = [predictor.predict(translate(x, dy, dx)) for dy, dx in shifts]
            for i, pred in enumerate(preds):  # (B,) each; 0 px, then 8 directions per distance
                counts[0 if i == 0 else 1 + (i - 1) // len(DIRECTIONS)].append(
                    (pred.to(device) == y).sum()
                )
            bar.update(len(shifts))
    n_batches = len(counts[0])
    correct = torch.stack([torch.stack(c) for c in counts[1:]]) if max_shift else None
    per_dir = (  # (k, 8): batches interleave the 8 directions
        correct.view(max_shift, n_batches, len(DIRECTIONS)).sum(1).cpu().double()
        if correct is not None
        else torch.zeros(0, len(DIRECTIONS), dtype=torch.float64)
    )
    unshifted = torch.stack(counts[0]).sum().cpu().double().expand(1, len(DIRECTIONS))
    accuracy = torch.cat([unshifted, per_dir]).numpy() / n  # row 0: same in every direction
    return ShiftResult(label, getattr(predictor, "dataset", ""), n, accuracy)


def shift_rows(results: list[ShiftResult]) -> tuple[list[str], list[list[Any]]]:
    """Long-format table: one row per model, distance and direction (CSV)."""
    columns = ["model", "dataset", "n_images", "distance_px", "direction", "dy", "dx", "accuracy"]
    rows: list[list[Any]] = []
    for r in results:
        for d in range(r.max_shift + 1):
            for j, (name, (uy, ux)) in enumerate(zip(DIRECTION_NAMES, DIRECTIONS, strict=True)):
                if d == 0 and j > 0:
                    continue
                rows.append(
                    [
                        r.name,
                        r.dataset,
                        r.n_images,
                        d,
                        name if d else "-",
                        d * uy,
                        d * ux,
                        f"{r.accuracy[d, j]:.6f}",
                    ]
                )
    return columns, rows


def summary_table(
    results: list[ShiftResult], references: dict[str, tuple[float, ...]] | None = None
) -> tuple[list[str], list[list[Any]]]:
    """Side-by-side table: per model, accuracy % at 0 px, then mean / worst per distance.

    ``references`` (lecture curves, percent from 0 px) are added as rows marked "lecture".
    """
    k = max(r.max_shift for r in results)
    columns = ["model", "0 px"] + [f"{d} px mean / worst" for d in range(1, k + 1)]
    rows: list[list[Any]] = []
    for r in results:
        row: list[Any] = [r.name, f"{100 * r.mean[0]:.2f}"]
        for d in range(1, k + 1):
            row.append(
                f"{100 * r.mean[d]:.2f} / {100 * r.worst[d]:.2f}" if d <= r.max_shift else ""
            )
        rows.append(row)
    for ref_name, curve in (references or {}).items():
        rows.append(
            [ref_name, f"{curve[0]:.2f}"]
            + [f"{curve[d]:.2f}" if d < len(curve) else "" for d in range(1, k + 1)]
        )
    return columns, rows


def write_shift_outputs(
    results: list[ShiftResult],
    out_dir: Path,
    references: dict[str, tuple[float, ...]],
    dataset: str,
    prefix: str = "shift",
) -> dict[str, Path]:
    """Write ``prefix``.md / _summary.csv (side by side), .csv (long), .json and .png; log them
    to W&B."""
    from imgcls.insight.artifacts import (
        log_to_wandb,
        markdown_table,
        save_figure,
        write_csv,
        write_json,
    )
    from imgcls.insight.figures import shift_figure
    from imgcls.utils import atomic_write_text

    out_dir = Path(out_dir)
    n = ", ".join(sorted({f"{r.n_images:,}" for r in results}))
    cols, rows = summary_table(results, references)
    md = out_dir / f"{prefix}.md"
    atomic_write_text(
        md,
        f"# Accuracy (%) on shifted {dataset} test images\n\n"
        f"{n} test images; each distance d is tried in 8 directions (N, NE, E, SE, S, SW, W, NW; a "
        f"diagonal step moves d rows and d columns), zero fill. Lecture rows: lecture 002.\n\n"
        + markdown_table(cols, rows),
    )
    summary_csv = write_csv(out_dir / f"{prefix}_summary.csv", cols, rows)
    long_cols, long_rows = shift_rows(results)
    long_csv = write_csv(out_dir / f"{prefix}.csv", long_cols, long_rows)
    js = write_json(
        out_dir / f"{prefix}.json",
        {
            "dataset": dataset,
            "models": [r.to_dict() for r in results],
            "references": {k: list(v) for k, v in references.items()},
        },
    )
    curves = [(r.name, list(100 * r.mean), list(100 * r.worst)) for r in results]
    png = save_figure(
        shift_figure(
            curves, references, f"{dataset}: accuracy on shifted test images ({n} images)"
        ),
        out_dir / f"{prefix}.png",
    )
    log_to_wandb(
        prefix, {"plot": png}, {"summary": (cols, rows), "per_direction": (long_cols, long_rows)}
    )
    return {"md": md, "summary_csv": summary_csv, "csv": long_csv, "json": js, "png": png}
