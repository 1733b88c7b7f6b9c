"""Evaluation runs the way the model was trained: channels_last when the checkpoint says so, in
the run's mixed precision, under inference mode, in large batches, with the same accuracies as
the plain per-batch loop it replaced."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from imgcls.data.transforms import DIRECTIONS, normalize, translate
from imgcls.insight.shift import TorchPredictor, evaluate_shift, load_predictor
from imgcls.training.checkpoint_io import autocast_dtype, load_checkpoint, trained_precision


def _reference_shift(model, images, labels, max_shift: int, batch_size: int = 1000) -> np.ndarray:
    """The evaluation as it was: the module's forward on batches of 1000, a count per batch."""
    hp = model.hparams
    correct = np.zeros((max_shift + 1, len(DIRECTIONS)))
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x, y = images[start : start + batch_size], labels[start : start + batch_size]

            def hits(v: torch.Tensor, y: torch.Tensor = y) -> int:
                return int((model(normalize(v, hp.mean, hp.std)).argmax(1) == y).sum())

            correct[0] += hits(x)
            for d in range(1, max_shift + 1):
                for j, (uy, ux) in enumerate(DIRECTIONS):
                    correct[d, j] += hits(translate(x, d * uy, d * ux))
    return correct / len(images)


def _first_conv(net: torch.nn.Module) -> torch.nn.Module:
    return next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))


def _seen_by_first_conv(predictor: TorchPredictor, images: torch.Tensor) -> dict[str, object]:
    seen: dict[str, object] = {}
    conv = _first_conv(predictor.net)

    def hook(module, args):
        (x,) = args
        # By strides: with one channel `is_contiguous` answers True for both formats.
        seen["input_nhwc"] = x.stride(1) == 1 and x.stride(3) == x.shape[1]
        seen["weight_nhwc"] = module.weight.stride(1) == 1
        seen["inference_mode"] = torch.is_inference_mode_enabled()
        seen["autocast"] = torch.is_autocast_enabled("cpu")
        seen["batch"] = len(x)

    handle = conv.register_forward_pre_hook(hook)
    try:
        predictor.predict(images)
    finally:
        handle.remove()
    return seen


def test_shift_accuracies_are_those_of_the_plain_loop(trained_ckpt, real_data_root) -> None:
    from imgcls.insight.testset import load_test_set
    from imgcls.training.checkpoint_io import load_classifier

    test = load_test_set("mnist", real_data_root, limit=2500)
    before = _reference_shift(load_classifier(trained_ckpt), test.images, test.labels, 2)
    after = evaluate_shift(
        load_predictor(str(trained_ckpt)), test.images, test.labels, 2, progress=False
    )
    assert np.array_equal(after.accuracy, before)  # the same counts, image for image
    small = evaluate_shift(
        load_predictor(str(trained_ckpt)), test.images, test.labels, 2, 333, progress=False
    )
    assert np.array_equal(small.accuracy, before)  # the batch size changes nothing


@pytest.mark.parametrize("channels_last", [False, True])
def test_the_checkpoints_memory_format_reaches_the_first_conv(
    trained_ckpt, tmp_path: Path, channels_last: bool
) -> None:
    ckpt = load_checkpoint(trained_ckpt)
    ckpt["hyper_parameters"]["channels_last"] = channels_last
    path = tmp_path / "nhwc.ckpt"
    torch.save(ckpt, path)
    predictor = load_predictor(str(path))
    images = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8)
    seen = _seen_by_first_conv(predictor, images)
    assert seen["input_nhwc"] is channels_last and seen["weight_nhwc"] is channels_last, seen
    assert seen["inference_mode"] is True and seen["autocast"] is False, seen


def test_the_runs_precision_is_used(trained_ckpt, tmp_path: Path) -> None:
    run = tmp_path / "runs" / "mnist-lenet5" / "version_0"
    (run / "checkpoints").mkdir(parents=True)
    path = run / "checkpoints" / "best.ckpt"
    path.write_bytes(Path(trained_ckpt).read_bytes())
    (run / "config.yaml").write_text(yaml.safe_dump({"trainer": {"precision": "bf16-mixed"}}))
    assert trained_precision(path) == "bf16-mixed"
    predictor = load_predictor(str(path))
    assert predictor.autocast is torch.bfloat16
    seen = _seen_by_first_conv(predictor, torch.zeros(8, 1, 28, 28, dtype=torch.uint8))
    assert seen["autocast"] is True
    assert predictor.logits(torch.zeros(8, 1, 28, 28, dtype=torch.uint8)).dtype == torch.bfloat16
    # An explicit precision wins; a checkpoint without a run config evaluates in float32.
    assert TorchPredictor(predictor.model, precision="32-true").autocast is None
    assert trained_precision(trained_ckpt.parent / "nowhere.ckpt") is None


def test_autocast_dtype_follows_lightning() -> None:
    assert autocast_dtype(None, "cpu") is None
    assert autocast_dtype("32-true", "cuda") is None and autocast_dtype(32, "cpu") is None
    assert autocast_dtype("bf16-mixed", "cpu") is torch.bfloat16
    assert autocast_dtype("16-mixed", "cuda") is torch.float16
    assert autocast_dtype("16-mixed", "cpu") is torch.bfloat16  # Lightning's CPU fallback


def test_shift_evaluation_batches_for_the_device(trained_ckpt) -> None:
    from imgcls.insight.shift import eval_batch_size

    assert eval_batch_size("cpu") == 256 and eval_batch_size(None) == 256
    assert eval_batch_size("cuda") == 2048
    predictor = load_predictor(str(trained_ckpt))
    images = torch.zeros(3000, 1, 28, 28, dtype=torch.uint8)
    sizes: list[int] = []
    handle = _first_conv(predictor.net).register_forward_pre_hook(
        lambda m, a: sizes.append(len(a[0]))
    )
    try:
        evaluate_shift(predictor, images, torch.zeros(3000, dtype=torch.long), 1, progress=False)
    finally:
        handle.remove()
    assert sizes == [256] * 9 * 11 + [3000 - 256 * 11] * 9  # 12 chunks x (0 px + 8 shifts)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_shifting_normalised_images_is_normalising_shifted_ones(layout) -> None:
    from imgcls.data.transforms import shift_into

    x = torch.randint(0, 256, (5, 3, 9, 9), dtype=torch.uint8)
    base = normalize(x, 0.13, 0.31, layout)
    buf = torch.empty_like(base)
    for dy, dx in [(0, 0), (1, 0), (-2, 3), (9, 0), (4, -4)]:
        want = normalize(translate(x, dy, dx), 0.13, 0.31)
        got = shift_into(buf, base, dy, dx, -0.13 / 0.31)
        assert torch.equal(got, want), (dy, dx)
        assert got.is_contiguous(memory_format=layout)


def test_imgcls_test_evaluates_in_the_runs_precision(trained_run, real_data_root, tmp_path):
    import shutil

    from tests.helpers import FAST, run_imgcls

    run = tmp_path / "runs" / "mnist-lenet5" / "version_0"
    shutil.copytree(trained_run, run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["trainer"]["precision"] = "bf16-mixed"
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    args = ["--data.init_args.data_dir", str(real_data_root), "--data.init_args.val_size", "1000"]
    proc = run_imgcls("test", *FAST, "--ckpt_path", str(run), *args, cwd=tmp_path)
    assert "bfloat16 Automatic Mixed Precision" in proc.stdout + proc.stderr
    # A precision given on the command line wins over the run's.
    proc = run_imgcls(
        "test",
        *FAST,
        "--trainer.precision",
        "32-true",
        "--ckpt_path",
        str(run),
        *args,
        cwd=tmp_path,
    )
    assert "Automatic Mixed Precision" not in proc.stdout + proc.stderr
