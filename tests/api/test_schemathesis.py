"""Property-based run of the whole API against its own OpenAPI document (schemathesis).

A real server on 127.0.0.1:0 in a background thread serves two mock pools; every
operation gets up to 100 generated examples. No response may be a 5xx (except the
documented 503 POOL_UNAVAILABLE/POOL_UNREADY for tasks no pool can take) or
disagree with the document (status, content type, headers, body schema).
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.api import ApiServer, ApiSettings
from app.api.openapi import build_openapi
from app.engine_host.mock import MockSpec
from tests.api.conftest import started_orch

pytestmark = [
    pytest.mark.filterwarnings(
        "ignore::hypothesis.errors.HypothesisDeprecationWarning"  # raised inside schemathesis
    ),
]
CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
POOL_REFUSALS = {"POOL_UNAVAILABLE", "POOL_UNREADY"}
CALLS: Counter[str] = Counter()


class ServerThread:
    """An orchestrator and its ApiServer on their own event loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.orch: Any = None
        self.server: ApiServer | None = None

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    async def start(self) -> str:
        specs = [
            MockSpec("fuzz-a", tokens_per_s=0, hang_after_tokens=0),
            MockSpec("fuzz-b", tokens_per_s=0, hang_after_tokens=0, ctx=512),
        ]
        self.orch, _ = await started_orch(specs, queue_capacity=4)
        self.server = ApiServer(self.orch, ApiSettings(bind_port=0))
        await self.server.start()
        return self.server.url

    async def stop(self) -> None:
        assert self.server is not None
        await self.server.stop()
        await self.orch.shutdown(deadline_s=0.1)

    def close(self) -> None:
        self.run(self.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@pytest.fixture(scope="module")
def live_server(request: pytest.FixtureRequest) -> Iterator[str]:
    """Serve the API for the module's property run, then check that run's coverage.

    In one process every operation of the document must have been exercised; under
    pytest-xdist the operations are spread over the workers, and each operation's own
    count is checked after its test (``_enough_examples``).
    """
    server = ServerThread()
    url = server.run(server.start())
    yield url
    server.close()
    if not hasattr(request.config, "workerinput"):
        missing = [op for op in documented_operations() if not CALLS[op]]
        assert not missing, f"never exercised: {missing}"


@pytest.fixture
def _enough_examples() -> Iterator[None]:
    """After a property test, check the examples it sent per documented operation."""
    before = CALLS.copy()
    yield
    assert_enough_examples(CALLS - before)


def documented_operations() -> dict[str, bool]:
    """Return each operation of the document ("GET /v1/pools") and whether it takes inputs."""
    return {
        f"{method.upper()} {path}": "parameters" in op or "requestBody" in op
        for path, ops in build_openapi()["paths"].items()
        for method, op in ops.items()
    }


def assert_enough_examples(calls: Counter[str]) -> None:
    """Raise AssertionError naming an operation of ``calls`` that got too few examples.

    An operation with inputs needs 100 examples, one without inputs one.
    """
    for operation, has_inputs in documented_operations().items():
        count = calls[operation]
        assert not count or count >= (100 if has_inputs else 1), (operation, count)


schema = schemathesis.openapi.from_dict(build_openapi())


@schema.parametrize()
@settings(
    max_examples=100,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
@pytest.mark.usefixtures("_enough_examples")
def test_api_conforms_to_its_document(case: Any, live_server: str, http: requests.Session) -> None:
    response = case.call(base_url=live_server, session=http, timeout=10)
    CALLS[f"{case.method} {case.path}"] += 1
    status = response.status_code
    if status >= 500:
        code = response.json().get("code") if status == 503 else None
        assert code in POOL_REFUSALS, f"{case.method} {case.path} -> {status}: {response.text}"
    case.validate_response(response, checks=CHECKS)


def test_the_coverage_check_names_an_operation_that_got_too_few_examples() -> None:
    with pytest.raises(AssertionError, match="POST /v1/tasks"):
        assert_enough_examples(Counter({"POST /v1/tasks": 99}))
    assert_enough_examples(Counter({"POST /v1/tasks": 100, "GET /v1/pools": 1}))
