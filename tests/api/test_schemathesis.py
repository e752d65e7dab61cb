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
    # one worker runs the whole module: the last test counts what the property test sent
    pytest.mark.xdist_group("schemathesis"),
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
def live_server() -> Iterator[str]:
    server = ServerThread()
    url = server.run(server.start())
    yield url
    server.close()


schema = schemathesis.openapi.from_dict(build_openapi())


@schema.parametrize()
@settings(
    max_examples=100,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_conforms_to_its_document(case: Any, live_server: str, http: requests.Session) -> None:
    response = case.call(base_url=live_server, session=http, timeout=10)
    CALLS[f"{case.method} {case.path}"] += 1
    status = response.status_code
    if status >= 500:
        code = response.json().get("code") if status == 503 else None
        assert code in POOL_REFUSALS, f"{case.method} {case.path} -> {status}: {response.text}"
    case.validate_response(response, checks=CHECKS)


def test_every_operation_got_at_least_100_examples() -> None:
    """Runs after the property test above (same module, file order)."""
    if not CALLS:
        pytest.skip("the schemathesis run was not selected")
    for path, ops in build_openapi()["paths"].items():
        for method, op in ops.items():
            calls = CALLS[f"{method.upper()} {path}"]
            has_inputs = "parameters" in op or "requestBody" in op
            assert calls >= (100 if has_inputs else 1), (method, path, calls)
