"""``load_test_set``'s hint for a missing data folder is a command that ``imgcls data`` takes."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from imgcls.commands import data as data_command
from imgcls.insight import InsightError
from imgcls.insight.testset import load_test_set


def test_missing_data_dir_hints_a_valid_fetch_command(tmp_path: Path) -> None:
    absent = tmp_path / "absent"
    with pytest.raises(InsightError, match="data directory not found") as info:
        load_test_set("mnist", absent)
    hint = re.search(r"`imgcls data (.+?)`", str(info.value))
    assert hint is not None
    parser = argparse.ArgumentParser()
    data_command.add_arguments(parser)
    args = parser.parse_args(shlex.split(hint.group(1)))
    assert (args.action, args.dataset, args.data_dir) == ("fetch", "mnist", str(absent))
