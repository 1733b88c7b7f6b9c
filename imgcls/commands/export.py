"""``imgcls export``: a checkpoint becomes a verified ONNX model (see ``imgcls.export``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from imgcls.commands.options import (
    CKPT_HELP,
    add_ckpt,
    add_data_dir,
    add_out,
    add_which,
    check_writable_folder,
    checkpoint_from,
)
from imgcls.export import EXPORT_ROOT, OPSET
from imgcls.export.ensemble import TTA


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    add_ckpt(
        src,
        action="append",
        help=f"the checkpoint to export: {CKPT_HELP} (the checkpoint alone is enough, no YAML). "
        "Given several times: one ensemble graph that averages the members' softmax "
        "probabilities (same data set, classes, input size and normalisation; any nets)",
    )
    # --run_dir is the same option under its older name
    src.add_argument(
        "--run_dir", dest="ckpt", action="append", metavar="PATH", help=argparse.SUPPRESS
    )
    add_which(p)
    p.add_argument(
        "--tta",
        action="append",
        choices=TTA,
        default=None,
        help="test-time augmentation inside the graph: hflip averages the probabilities of "
        "the image and its mirror image (Fashion-MNIST; refused for MNIST); makes the export "
        "an ensemble graph even with one --ckpt",
    )
    add_out(
        p,
        None,
        "output folder (default: export/<experiment>-<version>, e.g. "
        "export/mnist-lenet5-version_0)",
    )
    p.add_argument(
        "--fp16",
        action="store_true",
        help="also write model.fp16.onnx (fp32 inputs/outputs), gated "
        "on >= 99.9%% top-1 agreement with the fp32 model",
    )
    p.add_argument(
        "--int8",
        action="store_true",
        help="also write model.int8.onnx (static int8 QDQ, per-channel weights, fp32 "
        "inputs/outputs), calibrated on validation images and gated on >= 99.5%% top-1 "
        "agreement with the fp32 model and test accuracy within 0.2 points of it",
    )
    p.add_argument(
        "--calibration_images",
        type=int,
        default=1000,
        help="with --int8: calibrate on this many validation images (default 1000)",
    )
    p.add_argument(
        "--features",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also write model.features.onnx: the same net with the feature maps of each conv "
        "and pooling layer as extra outputs fmap_0, fmap_1, ... (default: on; nets without "
        "conv layers get none)",
    )
    p.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    add_data_dir(p, folder=True)
    p.add_argument(
        "--parity_subset",
        type=int,
        default=None,
        help="check parity on the first N test images only (default: all 10,000)",
    )
    p.add_argument(
        "--batch_size", type=int, default=1000, help="images per batch during the parity check"
    )
    p.add_argument("--json", action="store_true", help="print the parity summary as JSON")
    p.add_argument(
        "--mlflow",
        nargs="?",
        const="",
        default=None,
        metavar="URI",
        help="after the export, log the verified model folder as artifacts (onnx/) to MLflow: "
        "into the MLflow run of the checkpoint's run folder, else a new run of its experiment "
        "(URI default: $MLFLOW_TRACKING_URI)",
    )
    add_triton_arguments(p)


def mlflow_uri(given: str) -> str:
    """The tracking URI of ``--mlflow [URI]``, checked to answer before the export runs."""
    import os

    from imgcls.errors import ConfigError
    from imgcls.training.loggers import check_tracking_server

    uri = given or os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri:
        raise ConfigError("--mlflow needs a tracking URI: --mlflow URI, or set MLFLOW_TRACKING_URI")
    check_tracking_server(uri)
    return uri


def log_to_mlflow(uri: str, ckpt: Path, out_dir: Path, accuracy: float) -> str:
    """Log the export folder to the MLflow run that trained ``ckpt`` (found by its run
    folder), else to a new run of the checkpoint's experiment; return the run's id."""
    import os

    from mlflow import MlflowClient

    from imgcls.runs import run_of
    from imgcls.training.loggers import RUN_DIR_TAG

    client = MlflowClient(uri)
    run_dir = run_of(ckpt)
    experiment_name = run_dir.parent.name if run_dir is not None else "imgcls-exports"
    experiment = client.get_experiment_by_name(experiment_name)
    experiment_id = (
        experiment.experiment_id
        if experiment is not None
        else client.create_experiment(experiment_name)
    )
    run_id = None
    if run_dir is not None:
        wanted = os.path.abspath(run_dir)
        for r in client.search_runs([experiment_id], max_results=1000):
            if r.data.tags.get(RUN_DIR_TAG) == wanted:
                run_id = r.info.run_id
                break
    if run_id is None:
        name = f"{run_dir.parent.name}/{run_dir.name} export" if run_dir else f"{ckpt} export"
        run_id = client.create_run(experiment_id, run_name=name).info.run_id
        client.set_terminated(run_id)
    client.log_artifacts(run_id, str(out_dir), "onnx")
    client.log_metric(run_id, "export/onnx_accuracy", accuracy)
    client.set_tag(run_id, "imgcls.onnx", str(out_dir.resolve()))
    return str(run_id)


def add_triton_arguments(p: argparse.ArgumentParser) -> None:
    from imgcls.export.triton import DEFAULT_MAX_BATCH_SIZE

    t = p.add_argument_group("Triton Inference Server (imgcls.export.triton)")
    t.add_argument(
        "--triton",
        metavar="DIR",
        default=None,
        help="after the export, also write DIR/<name>/config.pbtxt, labels.txt and "
        "1/model.onnx: a Triton model repository (onnxruntime backend)",
    )
    t.add_argument(
        "--triton_name", default=None, help="the model's name in DIR (default: the export folder's)"
    )
    t.add_argument(
        "--triton_max_batch_size",
        type=int,
        default=DEFAULT_MAX_BATCH_SIZE,
        help=f"max_batch_size of the Triton config (default {DEFAULT_MAX_BATCH_SIZE})",
    )
    t.add_argument(
        "--triton_instances",
        type=int,
        default=1,
        help="model instances per GPU (instance_group count, default 1)",
    )
    t.add_argument(
        "--triton_tensorrt",
        action="store_true",
        help="run the model through ONNX Runtime's TensorRT execution provider in FP16",
    )


def run(args: argparse.Namespace) -> int:
    from imgcls.errors import ConfigError
    from imgcls.export import export_checkpoint, export_ensemble
    from imgcls.export.pipeline import check_options as check_export_options

    # Numbers out of range are refused before the checkpoint is looked for or loaded.
    check_export_options(
        opset=args.opset,
        batch_size=args.batch_size,
        parity_subset=args.parity_subset,
        calibration_images=args.calibration_images if args.int8 else None,
    )
    # The model is staged beside --out (default export/<run>): a folder we cannot write is
    # found now, not after the parity run over the whole test set.
    check_writable_folder(Path(args.out).parent if args.out else EXPORT_ROOT)
    if args.triton is not None:  # likewise a bad --triton, before the parity run
        from imgcls.export.triton import check_options

        check_options(
            args.triton, args.triton_name, args.triton_max_batch_size, args.triton_instances
        )
    specs, tta = list(args.ckpt), list(dict.fromkeys(args.tta or ()))
    ensemble = len(specs) > 1 or bool(tta)
    if ensemble and args.int8:
        raise ConfigError(
            "--int8 is not offered for an ensemble: export it without --int8 (or each member "
            "alone with --int8)"
        )
    if ensemble and args.mlflow is not None:
        raise ConfigError(
            "--mlflow logs into the run of one checkpoint, and an ensemble has several: export "
            "it without --mlflow"
        )
    uri = mlflow_uri(args.mlflow) if args.mlflow is not None else None
    ckpts = [checkpoint_from(spec, args.which) for spec in specs]
    ckpt = ckpts[0]

    def log(msg: str) -> None:
        print(f"[imgcls export] {msg}", file=sys.stderr, flush=True)

    common: dict[str, Any] = {
        "fp16": args.fp16,
        "features": args.features,
        "opset": args.opset,
        "data_dir": args.data_dir,
        "parity_subset": args.parity_subset,
        "batch_size": args.batch_size,
        "log": log,
    }
    if ensemble:
        result = export_ensemble(ckpts, args.out, tta=tta, **common)
    else:
        result = export_checkpoint(
            ckpt,
            args.out,
            int8=args.int8,
            calibration_images=args.calibration_images,
            **common,
        )
    fp32 = result.parity["fp32"]
    summary = {
        "out_dir": str(result.out_dir),
        "files": [str(f) for f in result.files],
        "n_images": result.parity["n_images"],
        "max_abs_logit_diff": fp32["max_abs_logit_diff"],
        "top1_agreement": fp32["top1_agreement"],
        "torch_accuracy": fp32["torch_accuracy"],
        "onnx_accuracy": fp32["onnx_accuracy"],
    }
    if "members" in result.parity:
        summary["members"] = result.parity["members"]
    if "fp16" in result.parity:
        summary["fp16_top1_agreement"] = result.parity["fp16"]["top1_agreement_with_fp32"]
    if "int8" in result.parity:
        int8 = result.parity["int8"]
        summary["int8_top1_agreement"] = int8["top1_agreement_with_fp32"]
        summary["int8_onnx_accuracy"] = int8["onnx_accuracy"]
    features = result.parity.get("features")
    summary["features_model"] = (
        str(result.out_dir / "model.features.onnx") if features is not None else None
    )
    if features is not None:
        summary["feature_maps"] = len(features["outputs"])
        summary["features_max_abs_fmap_diff"] = features["max_abs_fmap_diff_vs_torch"]
    if args.triton is not None:
        from imgcls.export.triton import write_triton_repository

        triton = write_triton_repository(
            result.out_dir,
            args.triton,
            name=args.triton_name,
            max_batch_size=args.triton_max_batch_size,
            instances=args.triton_instances,
            tensorrt=args.triton_tensorrt,
        )
        summary["triton_model"] = str(triton)
        print(f"[imgcls export] Triton model repository: {triton}", file=sys.stderr, flush=True)
    if uri is not None:  # only a model that passed the parity gate gets here
        run_id = log_to_mlflow(uri, ckpt, result.out_dir, fp32["onnx_accuracy"])
        summary["mlflow_run_id"] = run_id
        print(f"[imgcls export] logged to MLflow run {run_id} ({uri})", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(
        f"[imgcls] ONNX model: {result.out_dir / 'model.onnx'} (test accuracy "
        f"{100 * fp32['onnx_accuracy']:.2f} % on {summary['n_images']:,} images; parity with "
        f"PyTorch: max |Δlogit| {fp32['max_abs_logit_diff']:.2g}, top-1 agreement "
        f"{100 * fp32['top1_agreement']:.2f} %)"
        + (
            f"; feature maps: {summary['features_model']} ({len(features['outputs'])} maps)"
            if features is not None
            else ""
        )
        + (
            "; members alone (PyTorch): "
            + ", ".join(f"{100 * m['torch_accuracy']:.2f} %" for m in summary["members"])
            if "members" in summary
            else ""
        )
    )
    return 0
