"""argparse subcommands of ``imgcls`` other than the LightningCLI ones."""
