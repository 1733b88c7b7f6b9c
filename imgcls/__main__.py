"""The ``imgcls`` command.

Training subcommands (``fit``, ``validate``, ``test``, ``predict``) go to LightningCLI; the
others (``data``, ``export``, ``infer``, ...) are small argparse tools registered in
``COMMANDS``. The runtime commands import no torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
# name -> (module, help); each module has `add_arguments(parser)` and `run(args) -> int`.
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("imgcls.commands.data", "fetch and verify the MNIST / Fashion-MNIST files"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in LIGHTNING_COMMANDS:
        from imgcls.cli import cli_main

        cli_main(argv)
        return 0
    parser = argparse.ArgumentParser(prog="imgcls", description="Image classifiers for MNIST / Fashion-MNIST.",
                                     epilog="Training: imgcls {fit,validate,test,predict} --help")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in LIGHTNING_COMMANDS:
        sub.add_parser(name, help=f"LightningCLI {name} (see `imgcls {name} --help`)", add_help=False)
    modules = {}
    for name, (mod, help_) in COMMANDS.items():
        modules[name] = importlib.import_module(mod)
        modules[name].add_arguments(sub.add_parser(name, help=help_, description=help_))
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return int(modules[args.command].run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
