"""The modules that reach into a third-party package's private parts (``*_compat.py``): each
test here fails with a message naming the upstream and what changed, so that an upgrade that
moves the private thing is seen here, not as a confusing failure somewhere else."""

from __future__ import annotations

import onnxruntime as ort
import pytest

from imgcls.deploy import onnxruntime_compat


def test_onnxruntime_still_has_its_error_types_where_we_catch_them() -> None:
    found = {e.__name__ for e in onnxruntime_compat.ORT_ERRORS}
    missing = [n for n in ("Fail", "InvalidArgument", "InvalidProtobuf") if n not in found]
    assert not missing, (
        f"onnxruntime {ort.__version__}: onnxruntime.capi.onnxruntime_pybind11_state no longer "
        f"defines {missing}; find where this release defines the errors InferenceSession raises "
        "and update imgcls/deploy/onnxruntime_compat.py"
    )
    try:
        ort.InferenceSession(b"not an onnx model", providers=["CPUExecutionProvider"])
    except onnxruntime_compat.ORT_ERRORS:
        pass
    except Exception as e:  # pragma: no cover - only when onnxruntime changed
        pytest.fail(
            f"onnxruntime {ort.__version__}: a damaged model raised {type(e).__module__}."
            f"{type(e).__name__}, which imgcls/deploy/onnxruntime_compat.py does not list; add "
            "it there (a damaged model must be a clear ModelLoadError, not a traceback)"
        )
    else:  # pragma: no cover
        pytest.fail(f"onnxruntime {ort.__version__} loaded a damaged model without an error")


def test_uvicorn_still_has_the_protocol_parts_the_bounded_head_overrides() -> None:
    import uvicorn

    from imgcls.deploy import uvicorn_compat

    problem = uvicorn_compat.uvicorn_protocol_ok()
    assert problem is None, (
        f"uvicorn {uvicorn.__version__}: {problem}; imgcls/deploy/uvicorn_compat.py overrides "
        "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol to bound a request's head "
        "(431 past MAX_HEAD_BYTES): update it for this release"
    )
