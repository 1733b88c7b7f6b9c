"""``imgcls export`` given a user's mistake: one line on stderr, exit status 2, no traceback,
and nothing already saved lost.

Options out of range are refused before the checkpoint is even loaded (a checkpoint that is
not there shows it: the option's error comes first). The exports start from an untrained MLP
checkpoint and the small generated data set (``tiny_data``).
"""

from __future__ import annotations

import errno
import os
import pathlib
from pathlib import Path

import pytest

from imgcls.__main__ import main
from imgcls.export.graph import OPSET, OPSET_MIN, max_opset
from tests.helpers.training import make_checkpoint


@pytest.fixture()
def ckpt(tmp_path: Path) -> Path:
    return make_checkpoint(tmp_path / "ckpts" / "mlp.ckpt", net_args={"hidden": [16]})


def export_args(ckpt: Path, out: Path, data: Path) -> list[str]:
    return [
        "export",
        "--ckpt",
        str(ckpt),
        "--out",
        str(out),
        "--data_dir",
        str(data),
        "--parity_subset",
        "50",
        "--no-features",
    ]


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one error line, after nothing but the command's own progress lines."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert lines and lines[-1].startswith("imgcls: error: "), lines
    assert all(line.startswith("[imgcls export] ") for line in lines[:-1]), lines
    return lines[-1]


@pytest.fixture(autouse=True)
def no_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMGCLS_DEBUG", raising=False)


# ----------------------------------------------------------------------------- option ranges
@pytest.mark.parametrize("value", ["0", "-1"])
def test_batch_size_below_1_is_one_line_before_any_work(
    value: str, ckpt: Path, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "export" / "run"
    assert main([*export_args(ckpt, out, tiny_data), "--batch_size", value]) == 2
    err = capsys.readouterr().err
    assert err == f"imgcls: error: --batch_size must be >= 1, got {value}\n"
    assert not out.exists()


@pytest.mark.parametrize("opset", [0, 7, OPSET_MIN - 1, 99])
def test_unsupported_opset_is_one_line_naming_the_range(
    opset: int, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # no checkpoint there at all: the opset is refused before one is looked for
    missing = tmp_path / "none.ckpt"
    assert main(export_args(missing, tmp_path / "out", tiny_data) + ["--opset", str(opset)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(
        f"imgcls: error: --opset {opset} is not supported: pass an opset from {OPSET_MIN} to "
        f"{max_opset()} (default {OPSET};"
    ), err


def test_the_supported_opset_range() -> None:
    import onnx

    # 18 is the exporter's own opset; the top is what onnx and onnxruntime both know
    assert OPSET_MIN == OPSET == 18
    assert OPSET_MIN < max_opset() <= onnx.defs.onnx_opset_version()


def test_the_newest_supported_opset_exports(
    ckpt: Path, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import onnx

    out = tmp_path / "out"
    assert main([*export_args(ckpt, out, tiny_data), "--opset", str(max_opset())]) == 0
    model = onnx.load(out / "model.onnx")
    assert {o.domain: o.version for o in model.opset_import}[""] == max_opset()


# ----------------------------------------------------------------------------- full disk
def test_triton_on_a_full_disk_is_one_line_and_keeps_the_previous_model(
    ckpt: Path,
    tiny_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = tmp_path / "triton"
    previous = repo / "mlp"
    (previous / "1").mkdir(parents=True)
    (previous / "config.pbtxt").write_text('name: "mlp"\n')
    (previous / "1" / "model.onnx").write_bytes(b"the previous model")

    real_write = pathlib.Path.write_bytes

    def write_bytes(self: Path, data: bytes) -> int:
        if repo in self.parents:  # part of the file lands, as on a real full disk
            real_write(self, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real_write(self, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", write_bytes)
    out = tmp_path / "export" / "run"
    args = [*export_args(ckpt, out, tiny_data), "--triton", str(repo), "--triton_name", "mlp"]
    assert main(args) == 2
    err = error_line(capsys)
    assert err.startswith(f"imgcls: error: --triton {repo}: the disk is full"), err
    assert f"the previous model in {previous} is untouched" in err
    assert f"the export in {out} is complete" in err and "Free some space" in err
    # the previous Triton model as it was, no staged folder left, the export in place
    assert sorted(p.name for p in repo.iterdir()) == ["mlp"]
    assert (previous / "config.pbtxt").read_text() == 'name: "mlp"\n'
    assert (previous / "1" / "model.onnx").read_bytes() == b"the previous model"
    assert (out / "model.onnx").stat().st_size > 1000 and (out / "parity.json").is_file()


def test_triton_on_a_full_disk_creates_no_model(
    ckpt: Path,
    tiny_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import tempfile

    repo = tmp_path / "triton"
    real_mkdtemp = tempfile.mkdtemp

    def mkdtemp(*a: object, **kw: object) -> str:
        if Path(str(kw.get("dir", ""))) == repo:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(repo))
        return real_mkdtemp(*a, **kw)  # type: ignore[call-overload]

    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    out = tmp_path / "export" / "run"
    assert main([*export_args(ckpt, out, tiny_data), "--triton", str(repo)]) == 2
    err = error_line(capsys)
    assert "the disk is full" in err and f"{repo / 'run'} was not created" in err
    assert not repo.exists() or list(repo.iterdir()) == []
    assert (out / "model.onnx").is_file()
