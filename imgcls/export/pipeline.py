"""Export: a checkpoint (``imgcls.training.checkpoint_io``) becomes a verified ONNX folder for the
torch-free runtime (``imgcls.deploy``). ``export_checkpoint`` orchestrates the stage over
the modules of ``imgcls.export``, one concern each:

1. load: the net is rebuilt from the checkpoint alone (``load_classifier``), and the parity
   images are the official test set (all 10,000 unless a subset is asked for);
2. graph (``imgcls.export.graph``): the dynamo-based ``torch.onnx.export`` of the net with
   normalisation baked in (opset pinned, batch axis dynamic) and the metadata of
   ``imgcls.deploy.metadata`` written into it;
3. gates (``imgcls.export.gates``): ``onnx.checker.check_model(full_check=True)``, then parity
   with the PyTorch model through the serving runtime (onnxruntime on the CPU): largest
   |Δlogit| <= 1e-4 and top-1 agreement 100 %;
4. extras, each through its own gate against ``model.onnx``: ``model.fp16.onnx`` with
   ``fp16`` (float16 weights, float32 inputs and outputs; top-1 agreement >= 99.9 %),
   ``model.int8.onnx`` with ``int8`` (``imgcls.export.int8``: static QDQ calibrated on
   validation images, never test images; agreement >= 99.5 %, test accuracy within 0.2
   points), ``model.features.onnx`` unless ``features=False`` for a net with conv layers
   (``imgcls.export.features``: the feature maps as extra outputs), and the model card
   ``README.md`` (``imgcls.export.model_card``);
5. place (``imgcls.staging``): everything is written into a staged folder beside the target,
   which replaces the target only after every gate passed: a failed export leaves the
   previous good one untouched and no partial file anywhere. The staged folder's name
   carries the pid of the process that made it (``.<name>.<pid>.<random>.tmp``), so that the
   next export into the same parent removes the ones a killed export left behind.

``export_ensemble`` runs the same steps for several checkpoints folded into one graph that
averages their probabilities (``imgcls.export.ensemble``), gated on parity with the PyTorch
ensemble. ``imgcls.export.triton`` then turns an export folder into a Triton model repository.

References: timm ``utils/onnx.py`` (dynamic batch, checker, onnxruntime comparison);
https://pytorch.org/docs/stable/onnx_dynamo.html.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

import imgcls
from imgcls import staging
from imgcls.data.folder import resolve_framing
from imgcls.deploy import metadata as schema
from imgcls.deploy.classifier import OnnxClassifier
from imgcls.deploy.zoo import PROVENANCE_FILE
from imgcls.errors import ConfigError, ExportError, GateError
from imgcls.export import gates
from imgcls.export.ensemble import (
    COMBINE,
    LOGITS,
    EnsembleNet,
    check_members,
    check_tta,
    ensemble_reference,
    member_prefix,
)
from imgcls.export.features import FEATURES_FILE, features_model
from imgcls.export.gates import reference_logits
from imgcls.export.graph import OPSET, check_opset, set_metadata, to_fp16, to_onnx
from imgcls.export.int8 import INT8_FILE, int8_model
from imgcls.export.ledger import ledger
from imgcls.export.model_card import (
    SHIFT_IMAGES,
    is_model_card,
    model_card,
    per_class_accuracy,
    shift_accuracy,
)
from imgcls.runs import run_of
from imgcls.training.checkpoint_io import load_checkpoint, load_classifier
from imgcls.utils import check_writable_folder, sha256_file

__all__ = [
    "ARTIFACTS",
    "EXPORT_ROOT",
    "OPSET",
    "ExportError",
    "ExportResult",
    "GateError",
    "check_options",
    "default_export_dir",
    "export_checkpoint",
    "export_ensemble",
]

FP16_FILE = "model.fp16.onnx"
ARTIFACTS = (
    "model.onnx",
    FP16_FILE,
    INT8_FILE,
    FEATURES_FILE,
    "metadata.json",
    "parity.json",
    PROVENANCE_FILE,
)
EXPORT_ROOT = Path("export")


@dataclass
class ExportResult:
    out_dir: Path
    files: list[Path]
    metadata: dict[str, Any]
    parity: dict[str, Any] = field(default_factory=dict)


def export_checkpoint(
    ckpt_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    fp16: bool = False,
    int8: bool = False,
    calibration_images: int = 1000,
    features: bool = True,
    opset: int = OPSET,
    data_dir: str | os.PathLike[str] | None = None,
    parity_subset: int | None = None,
    batch_size: int = 1000,
    log: Callable[[str], None] = print,
    provenance: Mapping[str, Any] | None = None,
) -> ExportResult:
    """Export a checkpoint to ``out_dir`` (default ``export/<run-name>``) through the gates.

    Writes ``model.onnx``, ``metadata.json``, ``parity.json`` and the model card ``README.md``
    (``imgcls.export.model_card``), and ``model.fp16.onnx`` with ``fp16``,
    ``model.int8.onnx`` with ``int8``, ``model.features.onnx`` with ``features`` for a net
    with conv layers, into a staged folder beside ``out_dir`` that replaces it only after
    every check passed.

    Args:
        ckpt_path: a Lightning checkpoint of an ``ImageClassifier``.
        out_dir: target folder; a previous export there is replaced as a whole.
        fp16: also write and gate ``model.fp16.onnx``.
        int8: also write and gate ``model.int8.onnx`` (static int8 QDQ, ``imgcls.export.int8``).
        calibration_images: with ``int8``, calibrate on this many images of the validation
            split the checkpoint's training run used (training images if it had none).
        features: also write and gate ``model.features.onnx`` (the feature maps of each conv
            and pooling layer as extra outputs); skipped, with a log line, for a net without
            conv layers.
        opset: ONNX opset (default pinned ``OPSET``).
        data_dir: data root holding the test set (default ``$IMGCLS_DATA`` / ``~/.cache``).
        parity_subset: check parity on the first N test images only (for tests); default all.
        batch_size: images per batch during parity.
        log: progress messages.
        provenance: how the checkpoint was made (recipe, command, seed, commit, wall time:
            what the shipped models record), written to ``provenance.json`` with the net's
            parameter count and stated in the model card; None for none.

    Raises:
        CheckpointError: the checkpoint is missing, damaged or not an imgcls checkpoint.
        DataError: the test set is missing or corrupted (``imgcls data fetch``).
        ConfigError: an option out of range (``check_options``).
        ExportError: the exporter failed, or ``out_dir`` holds foreign files.
        GateError: the checker or a parity check failed (nothing written).
    """
    check_options(
        opset=opset,
        batch_size=batch_size,
        parity_subset=parity_subset,
        calibration_images=calibration_images if int8 else None,
    )
    ckpt_path = Path(ckpt_path)
    ckpt, model = load_checkpoint(ckpt_path), load_classifier(ckpt_path)
    hp = model.hparams
    out = (
        Path(out_dir) if out_dir is not None else default_export_dir(ckpt_path, hp.dataset, hp.net)
    )
    _check_target(out, log)
    shape = (int(hp.in_channels), int(hp.image_size), int(hp.image_size))
    images, y, test_set = _parity_images(
        ckpt_path, ckpt, hp.dataset, shape, data_dir, parity_subset
    )

    log(f"exporting {hp.net} ({ckpt_path}) to ONNX opset {opset}")
    proto = to_onnx(model.net, hp.mean, hp.std, shape, opset)
    metadata = _metadata(ckpt, ckpt_path, model, shape, len(y), opset)
    metadata["layers"] = ledger(model.net, shape)  # the page's per-layer ledger
    full = parity_subset is None or len(y) == test_set
    logits, parity = _fp32_model(
        proto, metadata, model, images, y, batch_size, full, test_set, out, log
    )
    blobs = {"model.onnx": proto.SerializeToString()}

    data = str(data_dir) if data_dir is not None else None
    if fp16:
        blobs[FP16_FILE], parity["fp16"] = _fp16_model(
            proto, metadata, images, logits, y, batch_size, out, log
        )
    if int8:
        blobs[INT8_FILE], parity["int8"] = int8_model(
            ckpt=ckpt,
            dataset=hp.dataset,
            model_bytes=blobs["model.onnx"],
            metadata=metadata,
            images=images,
            logits=logits,
            labels=y,
            n_calibration=calibration_images,
            data_dir=data,
            batch_size=batch_size,
            out=out,
            log=log,
        )
    if features:
        blob, figures = features_model(
            net=model.net,
            mean=float(hp.mean),
            std=float(hp.std),
            shape=shape,
            opset=opset,
            metadata=metadata,
            model_bytes=blobs["model.onnx"],
            images=images,
            logits=logits,
            batch_size=batch_size,
            out=out,
            log=log,
        )
        if blob is not None:
            blobs[FEATURES_FILE], parity["features"] = blob, figures

    n_params = sum(p.numel() for p in model.net.parameters())
    return _write(blobs, metadata, parity, ckpt, out, n_params, provenance, log)


def _write(
    blobs: dict[str, bytes],
    metadata: dict[str, Any],
    parity: dict[str, Any],
    ckpt: dict[str, Any],
    out: Path,
    n_params: int,
    provenance: Mapping[str, Any] | None,
    log: Callable[[str], None],
) -> ExportResult:
    """The gated models' digests, the records and the card written beside them into ``out``
    (all at once, staged)."""
    parity["model_sha256"] = {name: hashlib.sha256(b).hexdigest() for name, b in blobs.items()}
    parity["passed"] = True
    blobs["metadata.json"] = (json.dumps(metadata, indent=2) + "\n").encode()
    blobs["parity.json"] = (json.dumps(parity, indent=2) + "\n").encode()
    if provenance is not None:
        provenance = {**provenance, "parameters": n_params}
        blobs[PROVENANCE_FILE] = (json.dumps(provenance, indent=2) + "\n").encode()
    blobs["README.md"] = model_card(
        metadata, parity, ckpt, out=out, n_params=n_params, provenance=provenance
    ).encode()
    _place(blobs, out)
    log(f"wrote {out}: " + ", ".join(blobs))
    return ExportResult(out, [out / name for name in blobs], metadata, parity)


def export_ensemble(
    ckpt_paths: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    tta: Sequence[str] = (),
    fp16: bool = False,
    features: bool = True,
    opset: int = OPSET,
    data_dir: str | os.PathLike[str] | None = None,
    parity_subset: int | None = None,
    batch_size: int = 1000,
    log: Callable[[str], None] = print,
    provenance: Mapping[str, Any] | None = None,
) -> ExportResult:
    """Export several checkpoints of one data set as one ONNX graph through the gates of
    ``export_checkpoint``: ``imgcls.export.ensemble.EnsembleNet``, the members' softmax
    probabilities averaged (over the ``tta`` views too, inside the graph), with the outputs
    of a single export (its ``logits`` the log of the averaged probabilities).

    The parity gate holds the ONNX ensemble to the PyTorch ensemble; the test accuracy
    recorded is the ensemble's, each member's own (PyTorch, unaugmented) is in
    ``parity.json`` and the model card. ``metadata.json`` says ``net: "ensemble of N"``,
    ``parameters`` (the members' sum) and lists the members under ``ensemble``; its
    ``checkpoint`` and ``layers`` (the page's ledger) are the first member's, and
    ``model.features.onnx`` (``features``) is the first member alone with its feature maps
    (its metadata says ``answer_of: member 0``: the answer is model.onnx's). No int8.

    Args:
        ckpt_paths: the members' checkpoints, at least one (one with ``tta`` is an ensemble
            of its views).
        out_dir: target folder (default ``export/<first member's run>-ensembleN[-hflip]``).
        tta: test-time augmentations inside the graph (``hflip``; not for MNIST).
        fp16, features, opset, data_dir, parity_subset, batch_size, log, provenance: as
            ``export_checkpoint``'s; the test set is the first member's.

    Raises:
        ConfigError: no checkpoint, an option out of range, a bad ``tta``, or members that
            differ in data set, classes, input size or normalisation.
        CheckpointError, DataError, ExportError, GateError: as ``export_checkpoint``.
    """
    check_options(opset=opset, batch_size=batch_size, parity_subset=parity_subset)
    paths = [Path(p) for p in ckpt_paths]
    if not paths:
        raise ConfigError("an ensemble needs at least one checkpoint: pass --ckpt")
    ckpts = [load_checkpoint(p) for p in paths]
    models = [load_classifier(p) for p in paths]
    check_members(paths, models, ckpts)
    first, hp = models[0], models[0].hparams
    check_tta(tta, hp.dataset)
    if out_dir is not None:
        out = Path(out_dir)
    else:
        single = default_export_dir(paths[0], hp.dataset, hp.net)
        out = single.with_name(
            f"{single.name}-ensemble{len(paths)}" + "".join(f"-{t}" for t in tta)
        )
    _check_target(out, log)
    shape = (int(hp.in_channels), int(hp.image_size), int(hp.image_size))
    images, y, test_set = _parity_images(
        paths[0], ckpts[0], hp.dataset, shape, data_dir, parity_subset
    )

    net = EnsembleNet([m.net for m in models], tta).eval()
    nets = [str(m.hparams.net) for m in models]
    log(
        f"exporting an ensemble of {len(paths)} ({', '.join(nets)})"
        + (f" with test-time {'+'.join(tta)}" if tta else "")
        + f" to ONNX opset {opset}"
    )
    proto = to_onnx(net, hp.mean, hp.std, shape, opset)
    metadata = _metadata(ckpts[0], paths[0], first, shape, len(y), opset)
    member_params = [sum(p.numel() for p in m.net.parameters()) for m in models]
    members = [
        {
            "net": str(m.hparams.net),
            "net_args": dict(m.hparams.net_args or {}),
            "parameters": n,
            "checkpoint": _metadata(c, p, m, shape, len(y), opset)["checkpoint"],
        }
        for p, c, m, n in zip(paths, ckpts, models, member_params, strict=True)
    ]
    metadata.update(
        net=f"ensemble of {len(paths)}",
        net_args={"members": nets, **({"tta": list(tta)} if tta else {})},
        parameters=sum(member_params),
        ensemble={
            "members": members,
            "views": list(net.views),
            "combine": COMBINE,
            "logits": LOGITS,
            "layers_and_feature_maps": "the first member's (" + member_prefix(0) + "*)",
        },
    )
    # The page's ledger: the first member's layers, named as in the graph, so that the page
    # finds their weights (net.members.0.<layer>.weight) and their feature maps.
    metadata["layers"] = [
        {**e, "name": member_prefix(0) + e["name"]} for e in ledger(first.net, shape)
    ]
    full = parity_subset is None or len(y) == test_set
    log(f"the PyTorch ensemble on {len(y)} test images")
    ref, own = ensemble_reference(net, images, hp.mean, hp.std, batch_size)
    logits, parity = _fp32_model(
        proto, metadata, first, images, y, batch_size, full, test_set, out, log, reference=ref
    )
    for member, member_lp in zip(members, own, strict=True):
        member["torch_accuracy"] = float((member_lp.argmax(1) == y).mean())
    parity["members"] = [
        {
            "checkpoint": m["checkpoint"]["path"],
            "net": m["net"],
            "torch_accuracy": m["torch_accuracy"],
        }
        for m in members
    ]
    set_metadata(proto, metadata)  # with the members' accuracies
    blobs = {"model.onnx": proto.SerializeToString()}
    if fp16:
        blobs[FP16_FILE], parity["fp16"] = _fp16_model(
            proto, metadata, images, logits, y, batch_size, out, log
        )
    if features:
        blob, figures = features_model(
            net=first.net,
            mean=float(hp.mean),
            std=float(hp.std),
            shape=shape,
            opset=opset,
            metadata=metadata,
            model_bytes=blobs["model.onnx"],
            images=images,
            logits=logits,
            batch_size=batch_size,
            out=out,
            log=log,
            label_prefix=member_prefix(0),
            member_log_probs=own[0],
        )
        if blob is not None:
            blobs[FEATURES_FILE], parity["features"] = blob, figures

    return _write(blobs, metadata, parity, ckpts[0], out, sum(member_params), provenance, log)


def default_export_dir(ckpt_path: str | os.PathLike[str], dataset: str, net: str) -> Path:
    """``export/<experiment>-<version>`` (``-last`` etc. appended for other than best.ckpt).

    ``runs/mnist-lenet5/version_0/checkpoints/best.ckpt`` -> ``export/mnist-lenet5-version_0``;
    a checkpoint outside a run directory gives ``export/<dataset>-<net>-<file stem>``.
    """
    path = Path(ckpt_path)
    suffix = "" if path.stem == "best" else f"-{path.stem}"
    run = run_of(path.resolve())
    if run is not None:
        return EXPORT_ROOT / f"{run.parent.name}-{run.name}{suffix}"
    return EXPORT_ROOT / f"{dataset}-{net}-{path.stem}"


def check_options(
    *,
    opset: int = OPSET,
    batch_size: int = 1000,
    parity_subset: int | None = None,
    calibration_images: int | None = None,
) -> None:
    """Refuse the export's numeric options out of range, before a checkpoint is loaded.

    Raises:
        ConfigError: ``opset`` outside the supported range (``imgcls.export.graph``), or a
            ``batch_size``, ``parity_subset`` or ``calibration_images`` below 1.
    """
    check_opset(opset)
    for option, value in (
        ("--batch_size", batch_size),
        ("--parity_subset", parity_subset),
        ("--calibration_images", calibration_images),
    ):
        if value is not None and value < 1:
            raise ConfigError(f"{option} must be >= 1, got {value}")


# ----------------------------------------------------------------------------- the steps
def _check_target(out: Path, log: Callable[[str], None]) -> None:
    """Refuse a target that is a file or holds foreign files, or whose parent cannot be
    written, before any work is done; remove the staged folders killed exports left there."""
    if staging.holds_cwd(out):
        raise ExportError(
            f"--out {out}: the current folder, or one that holds it; the export replaces its "
            "folder whole, which would leave this shell in a removed folder: pass --out with a "
            "folder below it"
        )
    _check_replaceable(out)
    # the staged folder goes beside `out`, or beside the folder it links to
    beside = Path(os.path.realpath(out)).parent
    check_writable_folder(beside)
    staging.remove_stale(
        beside,
        on_remove=lambda p: log(f"removing {p}, left behind by an export that did not finish"),
    )


def _check_replaceable(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder; pass another --out")
    if out.is_dir():
        foreign = sorted(
            p.name
            for p in out.iterdir()
            if p.name not in ARTIFACTS and not (p.name == "README.md" and is_model_card(p))
        )
        if foreign:
            raise ExportError(
                f"{out} holds files that are not part of an imgcls export "
                f"({', '.join(foreign[:5])}); "
                "it would be replaced as a whole: pass a new or empty --out folder"
            )


def _parity_images(
    ckpt_path: Path,
    ckpt: dict[str, Any],
    dataset: str,
    shape: tuple[int, int, int],
    data_dir: str | os.PathLike[str] | None,
    parity_subset: int | None,
) -> tuple[torch.Tensor, np.ndarray, int]:
    """The parity images (uint8 (N, C, H, W)), their labels (N,) and the size of the whole
    test set they come from.

    Raises:
        ExportError: the test set's images are not the shape the model takes.
    """
    from imgcls.data import trained_datamodule

    dm = trained_datamodule(  # only the test set is read: no validation split to carve out
        dataset,
        ckpt.get("datamodule_hyper_parameters"),
        str(data_dir) if data_dir is not None else None,
        class_names=(ckpt.get("hyper_parameters") or {}).get("class_names"),
        val_size=0,
    )
    dm.check_held_out("check the export")
    dm.setup("test")
    assert dm.test_set is not None
    images, labels = dm.test_set.images.cpu(), dm.test_set.labels.cpu()
    if tuple(images.shape[1:]) != shape:
        raise ExportError(
            f"{ckpt_path}: the model takes {shape} images but the {dataset} test set has "
            f"{tuple(images.shape[1:])}"
        )
    total = len(labels)
    if parity_subset is not None:
        images, labels = images[:parity_subset], labels[:parity_subset]
    return images, labels.numpy(), total


def _metadata(
    ckpt: dict[str, Any],
    ckpt_path: Path,
    model: Any,
    shape: tuple[int, int, int],
    n_images: int,
    opset: int,
) -> dict[str, Any]:
    """The export's metadata (``imgcls.deploy.metadata``), before any test accuracy."""
    hp = model.hparams
    framing = None
    if hp.dataset == "folder":  # the name does not say how its images were framed: record it
        dm = ckpt.get("datamodule_hyper_parameters") or {}
        framing = resolve_framing(str(dm.get("framing") or "auto"))
    return schema.model_metadata(
        dataset=hp.dataset,
        class_names=list(model.class_names),
        input_shape=shape,
        mean=hp.mean,
        std=hp.std,
        net=hp.net,
        net_args=dict(hp.net_args or {}),
        checkpoint={
            "path": str(ckpt_path),
            "sha256": sha256_file(ckpt_path),
            "epoch": ckpt.get("epoch"),
            "global_step": ckpt.get("global_step"),
            **_val_scores(ckpt, ckpt_path),
        },
        test_images=n_images,
        opset=opset,
        framing=framing,
        versions={
            "imgcls": imgcls.__version__,
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": _ort_version(),
        },
    )


def _val_scores(ckpt: dict[str, Any], path: Path) -> dict[str, float | None]:
    """val/acc of this checkpoint's weights and the run's best, from the ModelCheckpoint state."""
    val_acc = best = None
    for state in (ckpt.get("callbacks") or {}).values():
        if not isinstance(state, dict) or state.get("monitor") != "val/acc":
            continue
        if state.get("best_model_score") is not None:
            best = float(state["best_model_score"])
        for stored, score in (state.get("best_k_models") or {}).items():
            if (
                Path(stored).name == path.name and score is not None
            ):  # paths are relative to the run's cwd
                val_acc = float(score)
    return {"val_acc": val_acc, "best_val_acc": best}


def _fp32_model(
    proto: onnx.ModelProto,
    metadata: dict[str, Any],
    model: Any,
    images: torch.Tensor,
    y: np.ndarray,
    batch_size: int,
    full_test_set: bool,
    test_set_images: int,
    out: Path,
    log: Callable[[str], None],
    reference: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """``model.onnx`` through the checker and the parity gate with PyTorch; sets its test
    accuracy in ``metadata`` and ``proto``. Returns its logits on ``images`` (what the extras
    are compared with) and the parity figures, with those the model card needs.
    ``reference``: the PyTorch logits on ``images`` when already computed (an ensemble's),
    else ``model``'s are."""
    hp = model.hparams
    set_metadata(proto, metadata)
    gates.check_graph(proto, out)

    # Through the serving runtime: uint8 -> [0, 1] is done there.
    log(f"parity on {len(y)} test images (PyTorch vs onnxruntime CPU)")
    ref = (
        reference
        if reference is not None
        else reference_logits(model, images, hp.mean, hp.std, batch_size)
    )
    session = OnnxClassifier(proto.SerializeToString(), device="cpu", batch_size=batch_size)
    got = session.logits(images.numpy())
    check = gates.compare_logits(
        got, ref, max_abs_diff=gates.MAX_ABS_LOGIT_DIFF, min_agreement=gates.MIN_FP32_AGREEMENT
    )
    fp32 = {
        "max_abs_logit_diff": check.max_abs_diff,
        "mean_abs_logit_diff": check.mean_abs_diff,
        "top1_agreement": check.top1_agreement,
        "disagreements": check.disagreements,
        "torch_accuracy": float((ref.argmax(1) == y).mean()),
        "onnx_accuracy": float((got.argmax(1) == y).mean()),
        "thresholds": {
            "max_abs_logit_diff": gates.MAX_ABS_LOGIT_DIFF,
            "min_top1_agreement": gates.MIN_FP32_AGREEMENT,
        },
    }
    gates.gate("fp32 parity", check.failures, out)
    metadata["test_accuracy"] = fp32["onnx_accuracy"]
    set_metadata(proto, metadata)

    parity: dict[str, Any] = {
        "n_images": len(y),
        "full_test_set": full_test_set,
        "dataset": hp.dataset,
        "provider": "CPUExecutionProvider",
        "fp32": fp32,
        "test_set_images": test_set_images,
        # for the model card: model.onnx's own predictions, per class and on shifted images
        "per_class": per_class_accuracy(got.argmax(1), y, list(model.class_names)),
    }
    log(f"accuracy on the first {min(len(y), SHIFT_IMAGES)} test images shifted by 1-3 px")
    parity["shift"] = shift_accuracy(
        lambda x: session.logits(x).argmax(1), images[:SHIFT_IMAGES].numpy(), y[:SHIFT_IMAGES]
    )
    return got, parity


def _fp16_model(
    proto: onnx.ModelProto,
    metadata: dict[str, Any],
    images: torch.Tensor,
    logits: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    out: Path,
    log: Callable[[str], None],
) -> tuple[bytes, dict[str, Any]]:
    """``model.fp16.onnx`` through its gate against ``logits`` (model.onnx's on ``images``),
    and its parity figures."""
    log("converting to fp16 (fp32 inputs and outputs kept)")
    half = to_fp16(proto)
    gates.check_graph(half, out, "fp16")
    got = OnnxClassifier(half.SerializeToString(), device="cpu", batch_size=batch_size).logits(
        images.numpy()
    )
    check = gates.compare_logits(
        got, logits, min_agreement=gates.MIN_FP16_AGREEMENT, against="fp32", count_in_message=False
    )
    figures = {
        "top1_agreement_with_fp32": check.top1_agreement,
        "disagreements": check.disagreements,
        "max_abs_logit_diff_vs_fp32": check.max_abs_diff,
        "onnx_accuracy": float((got.argmax(1) == y).mean()),
        "thresholds": {"min_top1_agreement_with_fp32": gates.MIN_FP16_AGREEMENT},
    }
    gates.gate("fp16 parity", check.failures, out)
    set_metadata(half, {**metadata, "precision": "fp16", "test_accuracy": figures["onnx_accuracy"]})
    return half.SerializeToString(), figures


def _place(blobs: dict[str, bytes], out: Path) -> None:
    """Write ``blobs`` into a staged folder beside ``out`` and swap it into place, once the
    ONNX files as written pass the checker too."""
    with staging.staged_folder(out, wrap=lambda e: _placement_error(e, out)) as staged:
        try:
            for name, data in blobs.items():
                staging.write_durable(staged / name, data)
        except OSError as e:
            raise _placement_error(e, out) from e
        for name in blobs:  # the files as written
            if name.endswith(".onnx") and name != FP16_FILE:
                gates.check_graph(staged / name, out, f"{name} as written")


def _placement_error(e: OSError, out: Path) -> ExportError:
    """What a failed write of the staged folder means to the user; the caller removes the
    staged folder before the error leaves ``export_checkpoint``."""
    kept = (
        f"the previous export in {out} is untouched" if out.exists() else f"{out} was not created"
    )
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return ExportError(
            f"the disk holding {out.parent} is full (no space left, or over quota): the export "
            f"could not be written; nothing was lost: {kept}. Free some space, or pass --out "
            "on another disk, and export again"
        )
    return ExportError(
        f"cannot write the export beside {out}: {e.strerror or e} "
        f"({e.filename or out.parent}); nothing was lost: {kept}. Pass --out with a writable "
        "folder"
    )


def _ort_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)
