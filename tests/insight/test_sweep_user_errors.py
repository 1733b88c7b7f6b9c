"""``imgcls sweep subset --sizes`` above the training split: refused in one line naming the
maximum, before any training, rather than reported as that size while training on fewer."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgcls.__main__ import main
from imgcls.insight.sweep import run_sweep


@pytest.fixture(autouse=True)
def no_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMGCLS_DEBUG", raising=False)


def test_a_size_above_mnist_training_split_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("IMGCLS_DATASET_SPECS", raising=False)  # the real 60,000 / 10,000
    out = tmp_path / "sweep"
    argv = ["sweep", "subset", "--nets", "mlp", "--sizes", "100,70000", "--seeds", "1"]
    # no data there: the sizes are refused before the test set is looked for
    argv += ["--data_dir", str(tmp_path / "no_data"), "--out", str(out)]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err == (
        "imgcls: error: --sizes 70000: the mnist training split has 60,000 images; pass sizes "
        "from 1 to 60000 (60000 trains on all of them)\n"
    )
    assert captured.out == "" and not out.exists()


def test_sizes_are_checked_against_the_data_set_in_use(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sweep"
    argv = ["sweep", "subset", "--nets", "mlp", "--sizes", "601,600,1000", "--seeds", "1"]
    assert main([*argv, "--data_dir", str(tiny_data), "--out", str(out), "--no_progress"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "imgcls: error: --sizes 601,1000: the mnist training split has 600 images; pass sizes "
        "from 1 to 600 (600 trains on all of them)\n"
    )
    assert not out.exists()


def test_the_whole_training_split_is_a_size_it_reports_truly(tiny_data: Path) -> None:
    (point,) = run_sweep(
        ["mlp-8"], [600], seeds=1, epochs=1, data_dir=tiny_data, progress=False, log=print
    )
    assert point.size == point.n_train == 600
