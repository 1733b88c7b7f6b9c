"""Options that several commands share: one name, one help text, one meaning each."""

from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path
from typing import Any

from imgcls.errors import ConfigError, DiskFullError
from imgcls.utils import check_writable_folder

__all__ = [
    "CKPT_HELP",
    "add_ckpt",
    "add_common_arguments",
    "add_compare",
    "add_data_dir",
    "add_device",
    "add_model",
    "add_out",
    "add_preprocess",
    "add_which",
    "check_writable_folder",  # imgcls.utils', for the commands
    "checkpoint_from",
    "stdout_error",
    "write_stdout",
]

CKPT_HELP = (
    "a run folder (runs/<experiment>/version_N), an experiment folder (runs/<experiment>: "
    "its newest run with that checkpoint) or a .ckpt file"
)


def add_data_dir(p: argparse.ArgumentParser, folder: bool = False) -> None:
    p.add_argument(
        "--data_dir",
        default=None,
        help="data root (default: $IMGCLS_DATA or ~/.cache/imgcls/data)"
        + (
            "; for a model trained on a folder of images, the folder's root (default: the "
            "root its checkpoint records)"
            if folder
            else ""
        ),
    )


def add_out(p: argparse.ArgumentParser, default: str | None, what: str = "output folder") -> None:
    shown = default if default is not None else "see above"
    p.add_argument("--out", default=default, help=f"{what} (default: {shown})")


def add_ckpt(p: argparse.ArgumentParser | Any, **kwargs: object) -> None:
    """``--ckpt`` on a parser or a group of one (``add_mutually_exclusive_group()``, whose
    class argparse does not name publicly); keyword arguments (``required``, ``action``,
    ``metavar``, ``help``) adapt it."""
    kwargs.setdefault("metavar", "PATH")
    kwargs.setdefault("help", CKPT_HELP)
    p.add_argument("--ckpt", **kwargs)  # type: ignore[arg-type]


def add_which(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--which",
        choices=["best", "last"],
        default=None,
        help="which checkpoint of a run or experiment folder (default: best)",
    )


def add_model(p: argparse.ArgumentParser, default: str | None = None) -> None:
    """``--model``: an exported model.onnx, an export folder, or a shipped model's name
    (``imgcls models``); required unless ``default`` (a shipped name) is given. The command
    turns it into a file with ``imgcls.deploy.zoo.resolve_model``."""
    p.add_argument(
        "--model",
        required=default is None,
        default=default,
        help="an exported model (export/mnist-lenet5-version_0/model.onnx, or its folder) or "
        "the name of a model shipped with imgcls (imgcls models lists them: mnist, ...)"
        + (f" (default {default})" if default is not None else ""),
    )


def add_compare(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--compare",
        default=None,
        metavar="MODEL",
        help="another exported model of the same data set, shown beside --model on the page "
        "(e.g. an MLP beside a CNN: both under the same shifts), a shipped name (mnist_mlp) or "
        "a path, as --model",
    )


def add_device(p: argparse.ArgumentParser, default: str) -> None:
    from imgcls.deploy.classifier import DEVICES

    p.add_argument(
        "--device",
        choices=DEVICES,
        default=default,
        help="auto (CUDA if a GPU is usable, else CPU), cpu, cuda or tensorrt "
        f"(default {default}); "
        "cuda/tensorrt fail rather than fall back to the CPU",
    )


def add_preprocess(p: argparse.ArgumentParser) -> None:
    from imgcls.deploy.framing import PREPROCESS

    p.add_argument(
        "--preprocess",
        choices=PREPROCESS,
        default="auto",
        help="how an image that is not already the model's size (a photo, a scan, a drawing) "
        "becomes a model input: auto (the framing of the model's data set: MNIST's for "
        "digits, Fashion-MNIST's for clothes), mnist, fashion_mnist, or none (squash it to "
        "the model's size). An image of the model's size is used as it is (default auto)",
    )


def add_common_arguments(p: argparse.ArgumentParser, out_default: str) -> None:
    """What the insight commands share: --out, --data_dir, --no_progress and --wandb."""
    add_out(p, out_default)
    add_data_dir(p)
    p.add_argument("--no_progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--wandb",
        metavar="PROJECT",
        default=None,
        help="start a W&B run in PROJECT and log the figures and tables to it (they are also "
        "logged to any W&B run already active in the calling process)",
    )


def checkpoint_from(spec: str, which: str | None = None) -> Path:
    """The checkpoint file that ``--ckpt spec [--which best|last]`` names (``imgcls.runs``).

    Raises:
        ConfigError: ``--which`` with a checkpoint file.
        RunNotFoundError: nothing there.
    """
    from imgcls.runs import resolve_checkpoint

    if which is not None and Path(spec).is_file():
        raise ConfigError(f"--which picks a checkpoint of a folder; {spec} is a file already")
    return resolve_checkpoint(spec, which or "best")


def stdout_error(e: OSError, instead: str = "send the output elsewhere") -> str:
    """What to tell a user whose standard output cannot be written (``> /dev/full``)."""
    why = e.strerror or str(e)
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"cannot write to standard output ({why}): the disk or device it goes to is "
            f"full; free space, or {instead}"
        )
    return f"cannot write to standard output ({why}); {instead}"


def write_stdout(text: str, instead: str = "send the output elsewhere") -> None:
    """Write ``text`` to standard output and flush it, so that a failed write is an error here.

    Raises:
        BrokenPipeError: the reader has gone (``| head -1``); ``imgcls`` then exits quietly.
        DiskFullError: the device is full (``> /dev/full``); the message says ``instead``.
        ConfigError: any other write error.
    """
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(e.errno, stdout_error(e, instead)) from e
        raise ConfigError(stdout_error(e, instead)) from e
