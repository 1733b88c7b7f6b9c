"""The ``imgcls`` command.

Training subcommands (``fit``, ``validate``, ``test``, ``predict``) go to LightningCLI; the
others are small argparse tools listed in ``COMMANDS``, each a module with
``add_arguments(parser)`` and ``run(args) -> int``. Only the module of the command asked for
is imported, so ``imgcls infer`` never imports torch.

Every error meant for a user derives from ``imgcls.errors.ImgclsError`` and is caught here,
once: its message on stderr and exit status 2 (the traceback with ``--debug`` or
``IMGCLS_DEBUG=1``). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from imgcls.errors import ImgclsError

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("imgcls.commands.data", "fetch and verify the MNIST / Fashion-MNIST files"),
    "export": ("imgcls.commands.export", "export a checkpoint to a verified ONNX model"),
    "infer": ("imgcls.commands.infer", "classify images with an exported ONNX model (no torch)"),
    "serve": (
        "imgcls.commands.serve",
        "serve an exported ONNX model over HTTP, with a draw-a-digit page (no torch)",
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
}
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_wanted(argv)
    argv = [a for a in argv if a != "--debug"]
    try:
        return _dispatch(argv)
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


def _dispatch(argv: list[str]) -> int:
    if argv and argv[0] in LIGHTNING_COMMANDS:
        from imgcls.cli import cli_main

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
