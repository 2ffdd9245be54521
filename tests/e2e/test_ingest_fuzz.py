"""Schemathesis against the running ingest's own /openapi.json: whatever it is sent, never a 5xx other than
the documented 503 (Kafka unavailable), which a healthy broker here should not produce either."""

from __future__ import annotations

import base64
import os
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from tests.e2e.conftest import RunningServices

pytestmark = pytest.mark.e2e

# Examples per operation; FUZZ_EXAMPLES=500 searches harder than `make test` has the time for.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "30"))

WRITE_KEY_AUTH = "Basic " + base64.b64encode(b"demo-write-key:").decode()


def test_no_input_gets_a_server_error(services: RunningServices) -> None:
    # Driven by hand rather than by schemathesis' pytest plugin, which needs a fixture-loaded schema.
    schema = schemathesis.openapi.from_url(f"{services.ingest}/openapi.json")
    schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert {op.path for op in operations} >= {"/webhooks/shopify", "/webhooks/woocommerce", "/v1/batch"}
    failures: list[str] = []
    statuses: list[int] = []
    for operation in operations:

        @settings(
            max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        @given(case=operation.as_strategy())
        def call(case: schemathesis.Case[Any]) -> None:
            # The demo store's write key, so Segment bodies get past auth and into validation.
            response = case.call(timeout=10, headers={"Authorization": WRITE_KEY_AUTH})
            statuses.append(response.status_code)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.path} -> {response.status_code}: {response.text[:300]}")

        call()
    assert failures == []
    # It really exercised the API: many calls, refused for many different reasons.
    assert len(statuses) >= 10 * len(operations)
    assert {400, 401, 422} <= set(statuses)
