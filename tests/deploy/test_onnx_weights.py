"""``imgcls.deploy.onnx_weights``: the weights the static site carries, read from the ONNX file
without the onnx package, against the onnx package's own reading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from imgcls.deploy.onnx_weights import float_initializers
from imgcls.errors import ModelLoadError


def test_initializers_equal_onnx_numpy_helper(exported_lenet: Path, tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    for name in ("model.onnx", "model.features.onnx"):
        path = exported_lenet / name
        want = {
            t.name: numpy_helper.to_array(t)
            for t in onnx.load(path).graph.initializer
            if t.data_type == TensorProto.FLOAT
        }
        got = float_initializers(path)
        assert list(got) == list(want) and len(got) >= 10
        for k, v in want.items():
            assert got[k].shape == v.shape and np.array_equal(got[k], v), k
    # values as float_data (not raw bytes), dims of every kind, and a tensor of another type
    w = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        initializer=[
            helper.make_tensor("w", TensorProto.FLOAT, [2, 3], w.ravel().tolist()),
            helper.make_tensor("s", TensorProto.FLOAT, [], [2.5]),
            helper.make_tensor("i", TensorProto.INT64, [2], [1, 2]),
        ],
    )
    small = tmp_path / "small.onnx"
    onnx.save(helper.make_model(graph), small)
    got = float_initializers(small)
    assert list(got) == ["w", "s"]
    assert np.array_equal(got["w"], w) and got["s"].shape == () and float(got["s"]) == 2.5
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x3a\xff\xff\xff\xff\x0f")  # a graph field longer than the file
    with pytest.raises(ModelLoadError, match="its weights cannot be read"):
        float_initializers(bad)
