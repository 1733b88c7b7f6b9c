"""``imgcls data fetch | verify`` given a data root that is a file: one ``imgcls: error:`` line
naming the option, exit status 2, no traceback, and the file left as it was."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgcls.__main__ import main


@pytest.mark.parametrize("action", ["fetch", "verify"])
@pytest.mark.parametrize("below", ["", "sub"])
def test_data_dir_naming_a_file_is_one_line(
    action: str,
    below: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("IMGCLS_DEBUG", raising=False)
    a_file = tmp_path / "mnist.tar"
    a_file.write_bytes(b"not a folder")
    data_dir = a_file / below if below else a_file
    assert main(["data", action, "--dataset", "mnist", "--data_dir", str(data_dir)]) == 2
    captured = capsys.readouterr()
    where = "it is a file" if not below else f"{a_file} is a file"
    assert captured.err == (
        f"imgcls: error: --data_dir {data_dir}: {where}, not a folder; pass the data root, the "
        "folder that holds (or will hold) MNIST/raw and FashionMNIST/raw (default $IMGCLS_DATA "
        "or ~/.cache/imgcls/data)\n"
    )
    assert captured.out == "" and a_file.read_bytes() == b"not a folder"
    assert [p.name for p in tmp_path.iterdir()] == ["mnist.tar"]


def test_imgcls_data_naming_a_file_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("IMGCLS_DEBUG", raising=False)
    a_file = tmp_path / "data"
    a_file.write_bytes(b"")
    monkeypatch.setenv("IMGCLS_DATA", str(a_file))
    assert main(["data", "fetch", "--dataset", "mnist"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"imgcls: error: $IMGCLS_DATA {a_file}: it is a file, not a folder")
    assert err.count("\n") == 1
