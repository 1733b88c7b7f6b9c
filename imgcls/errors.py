"""The errors a user can meet, under one base class.

The ``imgcls`` entry point catches :class:`ImgclsError` once: it prints the message (which
says what was wrong and what to do) on stderr and exits with status 2; ``--debug`` or
``IMGCLS_DEBUG=1`` shows the traceback. Anything else that escapes a command is a bug and
keeps its traceback (exit status 1).

This module imports nothing but the standard library, so the torch-free runtime
(``imgcls.deploy``, ``imgcls infer``) shares it with the training side.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DiskFullError",
    "ExportError",
    "GateError",
    "ImageFileError",
    "ImageTooLargeError",
    "ImgclsError",
    "InputError",
    "InsightError",
    "ModelLoadError",
    "NonFiniteLossError",
    "ProviderError",
    "RunInUseError",
    "RunNotFoundError",
    "ServeError",
]


class ImgclsError(Exception):
    """Base of every error meant for a user. The message says what was wrong and what to do."""


class ConfigError(ImgclsError, ValueError):
    """An option or a config value is invalid, or two of them contradict each other."""


class RunInUseError(ConfigError):
    """Another process trains in the run folder a fit would use (its lock is held). A
    ``ConfigError`` as before, so its exit status and message stay; typed so that a caller that
    can pick another folder (``imgcls tune``'s trials) need not match the message's words."""


class DataError(ImgclsError, RuntimeError):
    """A data file is missing, corrupted or cannot be fetched."""


class CheckpointError(ImgclsError, RuntimeError):
    """A checkpoint is missing, damaged, or does not fit the model or data it is used with."""


class RunNotFoundError(CheckpointError):
    """``best`` / ``last`` / a run or experiment folder names no run that has that checkpoint."""


class DiskFullError(ImgclsError, OSError):
    """A write ran out of disk space; the file it was replacing is intact. An ``OSError`` with
    ``errno`` ENOSPC (or EDQUOT), so code that handles those keeps working."""

    def __str__(self) -> str:
        return str(self.strerror)


class ExportError(ImgclsError, RuntimeError):
    """An export cannot be made or placed (bad output folder, exporter failure)."""


class GateError(ExportError):
    """The exported model failed the checker or a parity gate; nothing was written."""


class InputError(ImgclsError, ValueError):
    """Images handed to the runtime have the wrong rank, size, dtype or values."""


class ImageFileError(InputError):
    """An input path is missing, not an image, or a damaged IDX file."""


class ImageTooLargeError(ImageFileError):
    """An image has more pixels than may be decoded safely (a limit, or a decompression bomb)."""


class ModelLoadError(ImgclsError, RuntimeError):
    """An ONNX file is missing, unreadable, or not an imgcls export."""


class ProviderError(ImgclsError, RuntimeError):
    """The execution provider asked for (CUDA, TensorRT) cannot run here."""


class InsightError(ImgclsError, ValueError):
    """A bad path, a mismatched data set or the wrong kind of net in an insight command."""


class NonFiniteLossError(ImgclsError, FloatingPointError):
    """The training loss became NaN or inf; the run stopped before saving anything from it."""


class ServeError(ImgclsError, RuntimeError):
    """``imgcls serve`` could not start: a worker failed to load the model."""
