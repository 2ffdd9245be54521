"""Schemathesis against the running segmenter's and notifier's own OpenAPI: whatever a marketing tool or a
stranger sends (any path parameter, query, token), never a server error."""

from __future__ import annotations

import os
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from tests.e2e.conftest import RunningServices

pytestmark = pytest.mark.e2e

# Examples per operation; FUZZ_EXAMPLES=500 searches harder than `make test` has the time for.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "15"))


@pytest.mark.parametrize("service", ["segmenter", "notifier"])
def test_no_request_gets_a_server_error(services: RunningServices, service: str) -> None:
    base = getattr(services, service)
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    failures: list[str] = []
    statuses: list[int] = []
    for operation in operations:

        @settings(
            max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        @given(case=operation.as_strategy())
        def call(case: schemathesis.Case[Any]) -> None:
            if "store_id" in (case.path_parameters or {}):
                case.path_parameters["store_id"] = "demo"  # past the store lookup, into the real queries
            response = case.call(timeout=10, headers={"Authorization": "Bearer demo-api-key"})
            statuses.append(response.status_code)
            if response.status_code >= 500 and response.status_code != 503:
                failures.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
                )

        call()
    assert failures == []
    assert len(statuses) >= 5 * len(operations)
    assert {200, 404} <= set(statuses)
