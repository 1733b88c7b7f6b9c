"""The ``imgcls`` command.

Training subcommands (``fit``, ``validate``, ``test``, ``predict``) go to LightningCLI; the
others are small argparse tools listed in ``COMMANDS``, each a module with
``add_arguments(parser)`` and ``run(args) -> int``. Only the module of the command asked for
is imported, so ``imgcls infer`` never imports torch.

The base install is the deployment one (ONNX Runtime, no torch: docs/deployment.md). A
command that needs the ``train`` extra, run without it, says so in one line and exits 2.

Every error meant for a user derives from ``imgcls.errors.ImgclsError`` and is caught here,
once: its message on stderr and exit status 2 (the traceback with ``--debug`` or
``IMGCLS_DEBUG=1``). Anything else is a bug and keeps its traceback.

Standard output is flushed before ``main`` returns, so a failed write shows up here and not
as a traceback at interpreter exit: a reader that left early (``imgcls infer ... | head -1``)
ends the command quietly with status 141 (128 + SIGPIPE, as a Unix tool killed by the signal);
a full device or another write error (``> /dev/full``) is one line on stderr and status 2.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import signal
import sys

from imgcls.errors import ImgclsError

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
# Commands whose -c / --config may name a shipped config (imgcls configs lists them).
CONFIG_COMMANDS = frozenset({*LIGHTNING_COMMANDS, "tune"})
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("imgcls.commands.data", "fetch and verify the MNIST / Fashion-MNIST files"),
    "export": ("imgcls.commands.export", "export a checkpoint to a verified ONNX model"),
    "infer": ("imgcls.commands.infer", "classify images with an exported ONNX model (no torch)"),
    "serve": (
        "imgcls.commands.serve",
        "serve an exported ONNX model over HTTP, with a draw-a-digit page (no torch)",
    ),
    "page": (
        "imgcls.commands.page",
        "the draw-a-digit page as a static site running the model in the browser (no torch)",
    ),
    "evaluate-onnx": (
        "imgcls.commands.evaluate_onnx",
        "accuracy of an ONNX model on the official test set",
    ),
    "evaluate": ("imgcls.commands.evaluate", "evaluations of trained models (shift robustness)"),
    "visualize": ("imgcls.commands.visualize", "filters, feature maps, PCA, confusion, kernels"),
    "summary": ("imgcls.commands.summary", "per-layer output shape, parameters and multiply-adds"),
    "sweep": ("imgcls.commands.sweep", "accuracy against training-set size"),
    "report": (
        "imgcls.commands.report",
        "the lectures' experiments, reproduced, as one markdown report",
    ),
    "tune": ("imgcls.commands.tune", "hyper-parameter search on Optuna, each trial a fit run"),
    "compare": (
        "imgcls.commands.compare",
        "runs side by side: their curves on shared axes and a table (PNG, markdown, CSV)",
    ),
    "models": ("imgcls.commands.models", "the trained models shipped with imgcls (--model NAME)"),
    "configs": ("imgcls.commands.configs", "the configs shipped with imgcls (-c NAME)"),
}
# Commands that must run in the deployment install: a missing training module there is a bug
# of ours, and keeps its traceback.
TORCH_FREE_COMMANDS = frozenset({"infer", "serve", "page", "evaluate-onnx", "models", "configs"})
# Top-level modules of the ``train`` extra (and of jsonargparse[signatures]).
TRAINING_MODULES = frozenset(
    {
        "torch",
        "torchvision",
        "lightning",
        "lightning_utilities",
        "torchmetrics",
        "jsonargparse",
        "docstring_parser",
        "typeshed_client",
        "onnx",
        "onnxscript",
        "wandb",
        "matplotlib",
        "tqdm",
        "tensorboard",
    }
)
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


def _usage() -> str:
    lines = [
        "usage: imgcls [--debug] COMMAND [options]",
        "",
        "Training (LightningCLI; `imgcls fit --help`):",
        "  fit, validate, test, predict",
        "",
        "Tools (`imgcls COMMAND --help`):",
    ]
    lines += [f"  {name:<14} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "--debug (or IMGCLS_DEBUG=1): show the traceback of an error"]
    return "\n".join(lines)


def _debug_wanted(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("IMGCLS_DEBUG", "") not in ("", "0")


def _missing_training_module(e: ModuleNotFoundError) -> str | None:
    """The training package whose absence ``e`` reports, or None for any other module (a
    missing submodule of an installed package is a broken install, not a missing extra)."""
    return e.name if e.name in TRAINING_MODULES else None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_wanted(argv)
    argv = [a for a in argv if a != "--debug"]
    code = _main(argv, debug)
    return _finish_stdout(code, debug)


def _main(argv: list[str], debug: bool) -> int:
    try:
        return _dispatch(argv)
    except BrokenPipeError:
        if debug:
            raise
        _stdout_to_devnull()
        return EXIT_BROKEN_PIPE
    except ModuleNotFoundError as e:
        command = argv[0] if argv else ""
        missing = _missing_training_module(e)
        if debug or missing is None or command in TORCH_FREE_COMMANDS:
            raise
        print(
            f"imgcls: error: imgcls {command} needs the training extra ({missing} is not "
            "installed): pip install 'imgcls[train]'",
            file=sys.stderr,
        )
        return EXIT_USER_ERROR
    except ImgclsError as e:
        if debug:
            raise
        print(f"imgcls: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        if debug:
            raise
        print("imgcls: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as e:
        # A full device under a print to standard output (files are written through
        # imgcls.utils, whose errors name the file and say the disk is full).
        if debug or e.errno not in (errno.ENOSPC, errno.EDQUOT) or e.filename is not None:
            raise
        from imgcls.commands.options import stdout_error

        _stdout_to_devnull()
        print(f"imgcls: error: {stdout_error(e)}", file=sys.stderr)
        return EXIT_USER_ERROR


def _finish_stdout(code: int, debug: bool) -> int:
    """Flush standard output now: what a command printed and the buffer still holds is
    written here, where a failure can still become an exit status and one line."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        if debug:
            raise
        _stdout_to_devnull()
        return code or EXIT_BROKEN_PIPE
    except OSError as e:
        if debug:
            raise
        _stdout_to_devnull()
        if code:  # the command failed and said why already
            return code
        from imgcls.commands.options import stdout_error

        print(f"imgcls: error: {stdout_error(e)}", file=sys.stderr)
        return EXIT_USER_ERROR
    return code


def _stdout_to_devnull() -> None:
    """Point standard output at os.devnull, so that the interpreter's own flush at exit does
    not fail a second time (and print a traceback) on what the buffer still holds."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by a caller (a test's capture)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _dispatch(argv: list[str]) -> int:
    if argv and argv[0] in CONFIG_COMMANDS:
        from imgcls.shipped import resolve_config_args

        argv = [argv[0], *resolve_config_args(argv[1:])]
    if argv and argv[0] in LIGHTNING_COMMANDS:
        from imgcls.training.cli import cli_main

        cli_main(argv)
        return 0
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else EXIT_USER_ERROR
    if argv[0] not in COMMANDS:
        print(_usage(), file=sys.stderr)
        print(f"\nimgcls: error: unknown command {argv[0]!r}", file=sys.stderr)
        return EXIT_USER_ERROR
    name = argv[0]
    module_name, help_ = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"imgcls {name}", description=help_)
    module.add_arguments(parser)
    return int(module.run(parser.parse_args(argv[1:])) or 0)


if __name__ == "__main__":
    sys.exit(main())
