"""The ``imgcls`` command.

Training subcommands (``fit``, ``validate``, ``test``, ``predict``) go to LightningCLI; the
others are small argparse tools listed in ``COMMANDS``, each a module with
``add_arguments(parser)`` and ``run(args) -> int``. Only the module of the command asked for
is imported, so ``imgcls infer`` never imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("imgcls.commands.data", "fetch and verify the MNIST / Fashion-MNIST files"),
    "export": ("imgcls.commands.export", "export a checkpoint to a verified ONNX model"),
    "infer": ("imgcls.commands.infer", "classify images with an exported ONNX model (no torch)"),
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


def _usage() -> str:
    lines = [
        "usage: imgcls COMMAND [options]",
        "",
        "Training (LightningCLI; `imgcls fit --help`):",
        "  fit, validate, test, predict",
        "",
        "Tools:",
    ]
    lines += [f"  {name:<14} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from_shell = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in LIGHTNING_COMMANDS:
        from imgcls.cli import cli_main

        cli_main(None if from_shell else argv)  # LightningCLI reads sys.argv itself
        return 0
    if not argv or argv[0] not in COMMANDS:
        print(_usage(), file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nimgcls: error: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0 if argv else 2
    name = argv[0]
    module_name, help_ = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"imgcls {name}", description=help_)
    module.add_arguments(parser)
    return int(module.run(parser.parse_args(argv[1:])) or 0)


if __name__ == "__main__":
    sys.exit(main())
