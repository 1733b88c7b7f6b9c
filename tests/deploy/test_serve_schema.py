"""Schemathesis against the running service's own ``/openapi.json``: requests generated from the
document (valid and invalid bodies, with and without the API key) never get a 5xx, and every
answer has a documented status, content type and body schema. Bounded: a fixed number of
examples per generation mode, derandomized, so the run takes the same few seconds each time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.helpers.serving import Server, running_server

pytestmark = [pytest.mark.real_data, pytest.mark.slow]

KEY = "schema-key"
EXAMPLES = 150  # per generation mode: about 20 s in all on 2 cores
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def server(exported_lenet: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("schema") / "serve.log"
    args = ("--device", "cpu", "--api_key", KEY, "--max_body_mb", "1")
    with running_server(exported_lenet / "model.onnx", *args, log=log) as s:
        yield s


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_generated_requests_get_documented_answers_and_no_5xx(server: Server, mode: str) -> None:
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    paths = set(schema.raw_schema["paths"])
    assert {"/predict", "/features", "/metadata", "/metrics", "/health"} <= paths
    strategy = schema.as_strategy(schemathesis.GenerationMode(mode))
    seen: dict[int, int] = {}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy, keyed=st.booleans())
    def check(case: Any, keyed: bool) -> None:
        headers = {"x-api-key": KEY} if keyed else None
        response = case.call_and_validate(
            base_url=server.url, headers=headers, checks=CHECKS, timeout=30
        )
        seen[response.status_code] = seen.get(response.status_code, 0) + 1

    check()
    assert seen and max(seen) < 500, seen
    # both sides of the key were exercised: some answers, some refusals
    assert 401 in seen, seen
    assert any(200 <= code < 300 for code in seen), seen
    assert "Traceback" not in server.output(), server.output()[-3000:]
