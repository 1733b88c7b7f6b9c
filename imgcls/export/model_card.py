"""The model card: ``README.md`` in every export folder, written by ``export_checkpoint``.

Generated from the checkpoint (its saved hyper-parameters, and the run's ``config.yaml`` when
the checkpoint lies in a run folder) and from what the gate measured (``parity.json``), never
by hand: a re-export rewrites it. The figures it needs beyond the parity check itself (the
accuracy per class, the accuracy on shifted images) are computed here by ``per_class_accuracy``
and ``shift_accuracy`` and recorded in ``parity.json`` too.

The first line is ``MARKER``: an export folder may hold a README.md only if it carries it, so
that an export never replaces a README somebody wrote.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from imgcls.deploy.framing import framing_for
from imgcls.deploy.zoo import recipes_and_seeds, short_commit

__all__ = [
    "MARKER",
    "SHIFT_DISTANCES",
    "SHIFT_IMAGES",
    "is_model_card",
    "model_card",
    "per_class_accuracy",
    "shift_accuracy",
]

MARKER = "<!-- imgcls model card: written by `imgcls export`; edits are lost on re-export -->"
SHIFT_IMAGES = 2000  # the first N parity images: 8 directions x 3 distances = 48,000 runs
SHIFT_DISTANCES = (1, 2, 3)
TEST_SET_SIZE = 10_000  # the official MNIST / Fashion-MNIST test sets


def is_model_card(path: Path) -> bool:
    """Whether ``path`` is a README.md that an export wrote (and may replace)."""
    try:
        with path.open("rb") as fh:
            return fh.readline().rstrip(b"\r\n") == MARKER.encode()
    except (IsADirectoryError, FileNotFoundError, PermissionError):
        return False


def _provenance_lines(p: Mapping[str, Any]) -> list[str]:
    """The card's account of how the model was made, from provenance.json."""
    wall = p.get("train_wall_s")
    recipes, seeds = recipes_and_seeds(p)
    several = len(seeds) > 1
    lines = [
        f"- recipe{'s' if len(recipes) > 1 else ''}: "
        + ", ".join(f"`{r}`" for r in recipes)
        + f", seed{'s' if several else ''} {', '.join(map(str, seeds))}"
        + (" (one per training, below)" if several else ""),
        f"- made by: `{p.get('command', '?')}`",
        f"- code: imgcls commit `{p.get('commit', '?')}`"
        if p.get("commit") or not several
        else "- code: the imgcls commit of each training, below",
        "- training wall time: "
        + (f"{float(wall) / 60:.1f} min" if isinstance(wall, int | float) else "?")
        + (f" ({p['trained_on']})" if p.get("trained_on") else ""),
    ]
    if p.get("note"):
        lines.append(f"- note: {p['note']}")
    members = p.get("members")
    if isinstance(members, list) and len(members) > 1:
        lines.append(f"- an ensemble of {len(members)} trainings (wall time summed), each:")
        for i, m in enumerate(members, 1):
            mwall = m.get("train_wall_s")
            took = f"{float(mwall) / 60:.1f} min" if isinstance(mwall, int | float) else "?"
            # where the members trained differently, each says where (the whole record cannot)
            where = m.get("trained_on") if not p.get("trained_on") else None
            lines.append(
                f"  - RUN{i}: `{m.get('recipe', '?')}`, seed {m.get('seed', '?')}, "
                f"commit `{short_commit(m.get('commit', '?'))}`, {took}"
                + (f" ({where})" if where else "")
            )
    return lines


# ----------------------------------------------------------------------------- figures
def per_class_accuracy(
    pred: np.ndarray, labels: np.ndarray, class_names: Sequence[str]
) -> list[dict[str, Any]]:
    """One row per class: its test images, how many were predicted right, the accuracy
    (None for a class without images, e.g. in a small parity subset)."""
    rows = []
    for k, name in enumerate(class_names):
        mask = labels == k
        n, right = int(mask.sum()), int((pred[mask] == k).sum())
        rows.append(
            {
                "class": k,
                "name": str(name),
                "n_images": n,
                "correct": right,
                "accuracy": right / n if n else None,
            }
        )
    return rows


def shift_accuracy(
    predict: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    labels: np.ndarray,
    distances: Sequence[int] = SHIFT_DISTANCES,
) -> dict[str, Any]:
    """Accuracy of ``predict`` (uint8 (N, C, H, W) -> labels (N,)) when every image is moved
    ``d`` pixels in each of the 8 compass directions, vacated pixels black: the same shifts
    as ``imgcls.insight.shift`` (and the training augmentation), mean and worst direction
    per distance."""
    import torch

    from imgcls.data.transforms import DIRECTION_NAMES, DIRECTIONS, translate

    x = torch.from_numpy(np.ascontiguousarray(images))
    n = len(labels)
    rows = []
    for d in distances:
        # all 8 directions in one call: the runtime batches it
        moved = torch.cat([translate(x, d * uy, d * ux) for uy, ux in DIRECTIONS]).numpy()
        right = (predict(moved).reshape(len(DIRECTIONS), n) == labels[None, :]).mean(axis=1)
        rows.append(
            {
                "distance_px": int(d),
                "mean": float(right.mean()),
                "worst": float(right.min()),
                "per_direction": {
                    name: float(v) for name, v in zip(DIRECTION_NAMES, right, strict=True)
                },
            }
        )
    return {
        "n_images": n,
        "unshifted": float((predict(images) == labels).mean()),
        "directions": list(DIRECTION_NAMES),
        "fill": "zero",
        "distances": rows,
    }


# ----------------------------------------------------------------------------- the card
def _ensemble_lines(ensemble: Mapping[str, Any]) -> list[str]:
    """The card's account of an ensemble's members and of what its graph computes."""
    from imgcls.runs import net_label

    views = list(ensemble.get("views") or ["identity"])
    members = list(ensemble.get("members") or [])
    L = [
        "## Ensemble",
        "",
        f"One graph holds {len(members)} member nets. It averages their softmax probabilities"
        + (
            f" on the image and on its {', '.join(views[1:])} view (test-time augmentation "
            "inside the graph), every member and view with the same weight"
            if len(views) > 1
            else ", every member with the same weight"
        )
        + ". Its `logits` are the log of the averaged probabilities, so `probabilities` "
        "(their softmax) is the average itself.",
        "",
        "| member | checkpoint | net | parameters | test accuracy alone (PyTorch) |",
        "|---:|---|---|---:|---:|",
    ]
    for k, m in enumerate(members):
        ck = m.get("checkpoint") or {}
        L.append(
            f"| {k} | `{ck.get('path', '?')}` (sha256 `{str(ck.get('sha256', '?'))[:12]}`) | "
            f"`{net_label(str(m.get('net')), m.get('net_args'))}` | "
            f"{m.get('parameters', 0):,} | {_pct(m.get('torch_accuracy'))} |"
        )
    L += [
        "",
        "The layer ledger (`layers` in the metadata) and the feature maps of "
        "`model.features.onnx` are member 0's, named `members.0.*` as in the graph: the page "
        "draws that member's layers, while its probabilities are the ensemble's. "
        "`model.features.onnx` is member 0 alone (its metadata says `answer_of: member 0`), so "
        "the page and `/features` take the answer from `model.onnx`. The checkpoint "
        "and training facts above and below are member 0's too.",
        "",
    ]
    return L


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.2f} %"


def model_card(
    metadata: Mapping[str, Any],
    parity: Mapping[str, Any],
    ckpt: Mapping[str, Any],
    *,
    out: str | os.PathLike[str] | None = None,
    n_params: int | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> str:
    """The model card (Markdown) of an export: ``metadata`` and ``parity`` as written to
    metadata.json / parity.json, ``ckpt`` the loaded checkpoint, ``out`` the export folder
    (for the commands), ``n_params`` the net's parameter count, ``provenance`` what
    provenance.json records (recipe, command, seed, commit, wall time), if anything."""
    from imgcls.export.training_facts import split_sizes, training_facts
    from imgcls.runs import net_label

    ck = metadata.get("checkpoint") or {}
    ckpt_path = str(ck.get("path", "?"))
    facts = training_facts(ckpt, ckpt_path)
    dm = facts["datamodule"]
    dataset = str(metadata.get("dataset", "?"))
    root = str(dm.get("root") or "?")
    folder_data = dataset == "folder"
    pretty = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}.get(dataset, dataset)
    if folder_data:
        pretty = f"image folder {Path(root).name}"
    classes = [str(c) for c in metadata.get("class_names", [])]
    net, net_args = str(metadata.get("net", "?")), dict(metadata.get("net_args") or {})
    label = net_label(net, net_args)
    fp32 = parity.get("fp32") or {}
    n = int(parity.get("n_images", 0))
    full = bool(parity.get("full_test_set"))
    test_n = int(parity.get("test_set_images") or TEST_SET_SIZE)
    folder = Path(out) if out is not None else Path("export") / f"{dataset}-{label}"
    model = folder / "model.onnx"
    shape = list((metadata.get("input") or {}).get("shape", ["batch", 1, 28, 28]))
    # What the runtime's --preprocess auto does with this model (framing_for, the one rule):
    # a folder's framing is recorded in the metadata (else in the data's hyper-parameters),
    # the IDX data sets are framed as their own images were.
    recorded = metadata.get("framing") or (dm.get("framing") if folder_data else None)
    kind = framing_for("auto", dataset, str(recorded) if recorded else None)
    digits = dataset != "fashion_mnist"
    n_train, n_val, n_total = split_sizes(dataset, dm)

    L: list[str] = [MARKER, "", f"# {pretty} classifier: {label} (ONNX)", ""]
    L += [
        f"`{model}` classifies {shape[-2]}×{shape[-1]} greyscale images into the "
        f"{len(classes)} {pretty} classes ({', '.join(classes)}). This card was written by "
        f"`imgcls export` from the checkpoint and from the export's own checks "
        f"(`parity.json`); it is rewritten by every export.",
        "",
        f"- checkpoint: `{ckpt_path}` (sha256 `{ck.get('sha256', '?')}`), "
        f"epoch {facts['epochs_done'] if facts['epochs_done'] is not None else '?'}, "
        f"step {ck.get('global_step', '?')}",
        f"- exported: {metadata.get('created_at', '?')}, ONNX opset {metadata.get('opset', '?')}, "
        f"imgcls {(metadata.get('versions') or {}).get('imgcls', '?')}",
        "",
        "## Data",
        "",
        (
            f"- data set: the folder `{root}` (`folder`: one folder per class, framing "
            f"`{dm.get('framing', 'auto')}`)"
            if folder_data
            else f"- data set: {pretty} (`{dataset}`)"
        ),
        f"- training images: {n_train:,}" if n_train is not None else "- training images: ?",
        (
            f"- validation split: the {n_val:,} images of `{root}/val/`"
            if folder_data and n_val and (Path(root) / "val").is_dir()
            else f"- validation split: {n_val:,} images carved from the {n_total or 0:,} training "
            f"images, class-stratified, seed {dm.get('seed', '?')}"
            if n_val
            else "- validation split: none"
        ),
        (
            f"- test set: the {test_n:,} images of `{root}/test/`, never used for training or "
            "model selection"
            if folder_data
            else f"- test set: the official {test_n:,}-image {pretty} test set, never used for "
            "training or model selection"
        ),
        "",
        "## Model",
        "",
        f"- net: `{net}`"
        + (f" with arguments `{net_args}`" if net_args else " (default arguments)")
        + (f", {n_params:,} parameters" if n_params is not None else ""),
        f"- input `{(metadata.get('input') or {}).get('name', 'pixels')}`: float32 "
        f"(N, {', '.join(str(d) for d in shape[1:])}) in [0, 1], NCHW; normalisation "
        f"(mean {metadata.get('mean')}, std {metadata.get('std')}) happens inside the graph",
        "- outputs: " + ", ".join(f"`{o['name']}`" for o in metadata.get("outputs", [])),
        "",
    ]
    ensemble = metadata.get("ensemble")
    if ensemble:
        L += _ensemble_lines(ensemble)
    L += [
        "## Training" + (" (the first member's)" if ensemble else ""),
        "",
    ]
    group = facts["param_group"]
    opt = facts["optimizer"] or (
        "not recorded (no config.yaml beside the checkpoint); its state at the checkpoint: "
        + ", ".join(f"{k}={v!r}" for k, v in group.items() if not isinstance(v, dict | list))
    )
    aug = [
        f"random shift up to {dm['shift_augment']} px" if dm.get("shift_augment") else None,
        f"random rotation up to {dm['rotate_augment']:g} degrees"
        if dm.get("rotate_augment")
        else None,
        f"random scaling by up to {dm['scale_augment']:.0%}" if dm.get("scale_augment") else None,
        "horizontal flip" if dm.get("hflip") else None,
        f"random erasing p={dm['random_erase']}" if dm.get("random_erase") else None,
    ]
    L += [
        f"- optimiser: `{opt}`",
        f"- learning-rate schedule: `{facts['scheduler']}`, stepped every "
        f"{facts['scheduler_interval'] or 'epoch'}"
        if facts["scheduler"]
        else "- learning-rate schedule: none (constant learning rate)",
        f"- epochs: {facts['epochs_done'] if facts['epochs_done'] is not None else '?'} done"
        + (f" of max_epochs {facts['max_epochs']}" if facts["max_epochs"] is not None else ""),
        f"- batch size: {dm.get('batch_size', '?')}",
        f"- augmentation: {', '.join(a for a in aug if a) or 'none'}",
        f"- loss: {facts['loss']}, label smoothing: {facts['label_smoothing']}",
        f"- seed: {facts['seed_everything'] if facts['seed_everything'] is not None else '?'}",
    ]
    if ck.get("val_acc") is not None:
        L.append(f"- validation accuracy of this checkpoint: {_pct(ck['val_acc'])}")
    if provenance:
        L += ["", "## Provenance", "", *_provenance_lines(provenance)]
    L += ["", "## Test accuracy", ""]
    subset = "" if full else f" (the first {n:,} images only: a subset was asked for)"
    L += [
        f"**{_pct(fp32.get('onnx_accuracy'))}** on {n:,} test images{subset}, measured with "
        f"this ONNX model through onnxruntime (PyTorch: {_pct(fp32.get('torch_accuracy'))}; "
        f"largest |Δlogit| {fp32.get('max_abs_logit_diff', float('nan')):.2g}, top-1 agreement "
        f"{_pct(fp32.get('top1_agreement'))}).",
        "",
        "| class | name | test images | correct | accuracy |",
        "|---:|---|---:|---:|---:|",
    ]
    for row in parity.get("per_class", []):
        L.append(
            f"| {row['class']} | {row['name']} | {row['n_images']:,} | {row['correct']:,} | "
            f"{_pct(row['accuracy'])} |"
        )
    shift = parity.get("shift")
    if shift:
        L += [
            "",
            "### Shifted images",
            "",
            f"The first {shift['n_images']:,} test images moved by d pixels in each of the 8 "
            "compass directions (a diagonal step moves d rows and d columns), vacated pixels "
            "black. Unshifted: " + _pct(shift["unshifted"]) + ".",
            "",
            "| shift | mean over 8 directions | worst direction |",
            "|---:|---:|---:|",
        ]
        for r in shift["distances"]:
            worst = min(r["per_direction"], key=r["per_direction"].get)
            L.append(
                f"| {r['distance_px']} px | {_pct(r['mean'])} | {_pct(r['worst'])} ({worst}) |"
            )
    if "fp16" in parity:
        L += [
            "",
            f"`model.fp16.onnx`: {_pct(parity['fp16']['onnx_accuracy'])}, top-1 agreement with "
            f"fp32 {_pct(parity['fp16']['top1_agreement_with_fp32'])}.",
        ]

    framing = {
        "mnist": "MNIST's framing: the digit's bounding box scaled to 20×20, centred by its "
        "centre of mass in 28×28, white ink on black",
        "fashion_mnist": "Fashion-MNIST's framing: the product trimmed, its longest edge scaled "
        "to 28, sharpened, centred, intensities negated (a light background becomes black)",
        "none": "no framing: the whole picture squashed to the model's size, as the folder's "
        "images were",
    }[kind]
    L += [
        "",
        "## Input it expects",
        "",
        f"{shape[-2]}×{shape[-1]} greyscale, "
        + (
            f"like the images of `{root}/train/`"
            if folder_data
            else f"{'a white digit on a black' if digits else 'a light object on a black'} "
            "background, the way the training images were framed"
        )
        + ". `imgcls infer` and `imgcls serve` "
        "take uint8 images and convert them to [0, 1] themselves; callers of the raw graph pass "
        "float32 in [0, 1], never normalised values. An image of any other size (a photo, a "
        f"scan) is framed by `--preprocess auto` with {framing}"
        + (
            " (the model's metadata records the folder's framing, so `auto` frames as its "
            "training images were)."
            if folder_data
            else "."
        ),
        "",
        "## Intended use and limitations",
        "",
    ]
    if folder_data:
        L += [
            f"- For images like those of `{root}/train/`, one object of the {len(classes)} "
            "classes per image: it always answers one of them, even for an image that shows "
            "none.",
        ]
    elif digits:
        L += [
            "- For single handwritten Arabic digits 0–9, one per image, in the style of MNIST "
            "(US Census Bureau employees and high-school students). Not for other scripts, "
            "letters, several digits in one image, or printed text: it always answers one of "
            "the 10 digits, even for an image that holds none.",
        ]
    else:
        L += [
            "- For single Zalando product photos of the 10 Fashion-MNIST categories, one "
            "product per image on a plain background. Not for people wearing clothes, scenes, "
            "or other categories: it always answers one of the 10 classes.",
        ]
    L += [
        "- The test accuracy above holds for images drawn like the test set. Accuracy on "
        "photos depends on the framing: cluttered backgrounds, thin or faint strokes, "
        "rotations and off-centre objects lower it, by an amount not measured here.",
        "- The probabilities are a softmax, not calibrated confidences; they do not flag an "
        "input that is not a "
        + ("digit." if digits else "product of these classes.")
        + " Shifts of a few pixels already cost accuracy (see above).",
        "- Not for decisions about people without a human check.",
        "",
        "## How to run it",
        "",
        "```bash",
        f"imgcls infer --model {model} image.png   # one row per image",
        f"imgcls serve --model {model} --port 8000   # HTTP, dynamic batching",
        "imgcls export "
        + (
            " ".join(f"--ckpt {m['checkpoint'].get('path', '?')}" for m in ensemble["members"])
            + "".join(f" --tta {v}" for v in ensemble["views"][1:])
            if ensemble
            else f"--ckpt {ckpt_path}"
        )
        + f" --out {folder} \\",
        f"    --triton triton                     # + Triton model repository triton/{folder.name}",
        "docker run --gpus all --rm -p8000:8000 -p8001:8001 -p8002:8002 -v $PWD/triton:/models \\",
        "    nvcr.io/nvidia/tritonserver:<yy.mm>-py3 tritonserver --model-repository=/models",
        "```",
        "",
        "See export/README.md for the Triton client request.",
    ]
    return "\n".join(L) + "\n"
