"""A small simulated store, sent by the simulator's command line through the running ingest, lands in the
segmenter's funnel exactly where the segmenter's own rules say its personas belong."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from shared.settings import REPO_ROOT
from shared.stores import StoreRegistry
from tests.e2e.conftest import RunningServices
from tests.unit.test_simulator_expectations import build, expected_profiles

pytestmark = pytest.mark.e2e

API = {"Authorization": "Bearer demo-api-key"}
SEED = 424_242
CUSTOMERS = 30


async def _funnel(client: httpx.AsyncClient, services: RunningServices) -> tuple[Counter[str], Counter[str]]:
    body = (await client.get(f"{services.segmenter}/v1/stores/demo/funnel", headers=API)).json()
    return Counter(body["by_stage"]), Counter(body["by_health"])


async def test_a_simulated_store_reaches_the_funnel_as_its_personas_say(services: RunningServices) -> None:
    end = datetime.now(UTC).replace(microsecond=0)
    stores_file = Path(services.env["STORES_FILE"])
    rules = StoreRegistry.load(stores_file).get("demo")
    assert rules is not None
    async with httpx.AsyncClient(timeout=10) as client:
        stages_before, health_before = await _funnel(client, services)
        command = [
            sys.executable, "-m", "deploy.simulator",
            "--customers", str(CUSTOMERS), "--seed", str(SEED), "--end", end.isoformat(),
            "--ingest-url", services.ingest, "--stores-file", str(stores_file), "--concurrency", "4",
        ]  # fmt: skip
        sent = await asyncio.to_thread(
            subprocess.run, command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr

        # The same seed and end give the same store: what the segmenter's rules make of it is the expectation.
        history, plan = build(seed=SEED, customers=CUSTOMERS, end=end)
        expected = expected_profiles(history, plan, datetime.now(UTC), rules.funnel)
        wanted = {c: (p.stage.value, h.value, p.orders_count) for c, (p, h) in expected.items()}

        async def actual() -> dict[str, tuple[str, str, int] | None]:
            found: dict[str, tuple[str, str, int] | None] = {}
            for customer in wanted:
                response = await client.get(
                    f"{services.segmenter}/v1/stores/demo/customers/{customer}", headers=API
                )
                body = response.json() if response.status_code == 200 else None
                found[customer] = (body["stage"], body["health"], body["orders_count"]) if body else None
            return found

        deadline = asyncio.get_running_loop().time() + 30
        while (found := await actual()) != wanted:
            if asyncio.get_running_loop().time() > deadline:
                wrong = {c: (found[c], w) for c, w in wanted.items() if found[c] != w}
                pytest.fail(f"customers not where the rules put them (found, expected): {wrong}")
            await asyncio.sleep(0.5)

        stages_after, health_after = await _funnel(client, services)
    assert stages_after - stages_before == Counter(p.stage.value for p, _ in expected.values())
    assert health_after - health_before == Counter(h.value for _, h in expected.values())
    personas = Counter(s.persona.value for s in history.shoppers)
    assert len(personas) >= 4, personas  # a believable mix even at 30 customers
    assert any(p.orders_count >= 3 for p, _ in expected.values())
    assert end - timedelta(days=365) <= min(a.at for a in history.actions())
