"""Tests of ``imgcls export --triton DIR`` (``imgcls.export.triton``): the model repository for
Triton Inference Server.

No Triton server runs here (no GPU, no container image): the generated ``config.pbtxt`` is
parsed into Triton's own ``ModelConfig`` protobuf (``tritonclient``), which rejects any
misspelt field or enum, and every value in it is compared with the ONNX graph it serves.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from google.protobuf import text_format

from imgcls.__main__ import main
from imgcls.errors import ExportError
from imgcls.export.triton import write_triton_repository

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
real_data = pytest.mark.real_data


def parse(path: Path):  # -> ModelConfig
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def exported(
    trained_ckpt: Path, real_data_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """(export folder, Triton repository) written by one ``imgcls export --triton`` run."""
    root = tmp_path_factory.mktemp("triton")
    out, repo = root / "mnist-lenet5-version_0", root / "triton"
    args = ["export", "--ckpt", str(trained_ckpt), "--out", str(out)]
    args += ["--data_dir", str(real_data_root), "--parity_subset", "300", "--no-features"]
    args += ["--triton", str(repo), "--triton_instances", "2", "--triton_max_batch_size", "32"]
    assert main(args) == 0
    return out, repo


def graph_io(model: onnx.ModelProto) -> list[tuple[str, list[int]]]:
    def dims(v: onnx.ValueInfoProto) -> list[int]:
        return [d.dim_value for d in v.type.tensor_type.shape.dim[1:]]

    return [(v.name, dims(v)) for v in (*model.graph.input, *model.graph.output)]


@real_data
def test_repository_matches_the_onnx_graph(exported: tuple[Path, Path]) -> None:
    out, repo = exported
    model_dir = repo / out.name  # default name: the export folder's
    assert sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*")) == [
        "1",
        "1/model.onnx",
        "config.pbtxt",
        "labels.txt",
    ]
    assert (model_dir / "1" / "model.onnx").read_bytes() == (out / "model.onnx").read_bytes()
    graph = onnx.load(out / "model.onnx")
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # batch axis dynamic

    cfg = parse(model_dir / "config.pbtxt")
    assert cfg.name == out.name and cfg.platform == "onnxruntime_onnx"
    assert cfg.max_batch_size == 32
    io = [(t.name, list(t.dims)) for t in (*cfg.input, *cfg.output)]
    assert (
        io
        == graph_io(graph)
        == [
            ("pixels", [1, 28, 28]),
            ("logits", [10]),
            ("probabilities", [10]),
        ]
    )
    fp32 = model_config_pb2.DataType.Value("TYPE_FP32")
    assert all(t.data_type == fp32 for t in (*cfg.input, *cfg.output))
    assert [o.label_filename for o in cfg.output] == ["", "labels.txt"]
    assert len(cfg.instance_group) == 1
    group = cfg.instance_group[0]
    assert group.kind == model_config_pb2.ModelInstanceGroup.Kind.Value("KIND_GPU")
    assert group.count == 2
    assert cfg.HasField("dynamic_batching")
    assert list(cfg.dynamic_batching.preferred_batch_size) == [8, 16, 32]
    assert cfg.dynamic_batching.max_queue_delay_microseconds > 0
    assert not cfg.optimization.execution_accelerators.gpu_execution_accelerator

    classes = json.loads((out / "metadata.json").read_text())["class_names"]
    assert (
        (model_dir / "labels.txt").read_text().splitlines()
        == classes
        == [str(k) for k in range(10)]
    )


@real_data
def test_tensorrt_accelerator(exported: tuple[Path, Path], tmp_path: Path) -> None:
    out, _ = exported
    model_dir = write_triton_repository(out, tmp_path / "repo", name="lenet5", tensorrt=True)
    assert model_dir == tmp_path / "repo" / "lenet5"
    cfg = parse(model_dir / "config.pbtxt")
    assert cfg.name == "lenet5" and cfg.max_batch_size == 64
    assert cfg.instance_group[0].count == 1
    (acc,) = cfg.optimization.execution_accelerators.gpu_execution_accelerator
    assert acc.name == "tensorrt"
    params = dict(acc.parameters)
    assert params["precision_mode"] == "FP16"
    assert params["trt_profile_min_shapes"] == "pixels:1x1x28x28"
    assert params["trt_profile_max_shapes"] == "pixels:64x1x28x28"


@real_data
def test_rewrite_replaces_only_its_own_model(exported: tuple[Path, Path], tmp_path: Path) -> None:
    out, _ = exported
    repo = tmp_path / "repo"
    (repo / "other").mkdir(parents=True)
    (repo / "other" / "config.pbtxt").write_text("keep")
    first = write_triton_repository(out, repo, name="m", max_batch_size=16)
    write_triton_repository(out, repo, name="m", max_batch_size=8)
    assert parse(first / "config.pbtxt").max_batch_size == 8
    assert sorted(p.name for p in repo.iterdir()) == ["m", "other"]  # nothing staged left
    assert (repo / "other" / "config.pbtxt").read_text() == "keep"
    (first / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="notes.txt"):
        write_triton_repository(out, repo, name="m")
    assert (first / "notes.txt").read_text() == "mine"


def test_a_file_as_dir_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.ckpt").write_bytes(b"x")  # never read: the option is checked first
    (tmp_path / "triton").write_text("not a folder")
    args = ["export", "--ckpt", str(tmp_path / "a.ckpt"), "--out", str(tmp_path / "out")]
    assert main([*args, "--triton", str(tmp_path / "triton")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("imgcls: error: ") and "--triton" in err and "not a folder" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("option", "value"), [("--triton_max_batch_size", "0"), ("--triton_instances", "0")]
)
def test_bad_numbers_are_refused(
    option: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.ckpt").write_bytes(b"x")
    args = ["export", "--ckpt", str(tmp_path / "a.ckpt"), "--out", str(tmp_path / "out")]
    assert main([*args, "--triton", str(tmp_path / "repo"), option, value]) == 2
    assert f"{option} must be >= 1" in capsys.readouterr().err
