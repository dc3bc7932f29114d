"""Schema-driven fuzzing of the running service from its own OpenAPI document (schemathesis):
no generated request, valid or not, makes it fail with a 5xx; every error is problem+json."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from margin_engine.service.settings import ServiceSettings
from tests.integration.service_helpers import LiveServer, live_server, make_key

EXAMPLES_PER_OPERATION = 12
pytestmark = pytest.mark.slow  # ~10 s: a dozen generated requests per operation
MARKET = {"schema": "margin-engine/market/v1", "timestamp": "2025-06-01T00:00:00Z",
          "underlyings": {"BTC": {"index": 65000, "vol": {"type": "flat", "sigma": 0.55}}},
          "assets": {"USDC": {"price": 1}, "USD": {"price": 1}, "BTC": {"price": 65000}}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    folder: Path = tmp_path_factory.mktemp("fuzz")
    (folder / "market.json").write_text(json.dumps(MARKET))
    store = f"sqlite:{folder / 'fuzz.db'}"
    key = make_key(store, "admin", rate_per_second=1e6, burst=1e6)
    settings = ServiceSettings(store=store, market=folder / "market.json", liquidation_limit=5)
    with live_server(settings) as live:
        with live.client(key) as client:  # something to find: an account with a position
            client.put("/v1/accounts/a1", json={"mode": "cross"})
            client.put("/v1/accounts/a1/collateral/USDC", json={"amount": 10000})
            client.put("/v1/accounts/a1/positions/BTC-PERP", json={"size": 0.1,
                                                                   "entry_price": 64000})
        yield live, key


def _fuzz(operation: Any, url: str, key: str, failures: list[str]) -> None:
    from hypothesis import HealthCheck, Phase, given, settings

    label = operation.label

    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def check(case: Any) -> None:
        response = case.call(base_url=url, headers={"Authorization": f"Bearer {key}"},
                             timeout=60)
        if response.status_code >= 500:
            failures.append(f"{label}: {response.status_code} {response.text[:300]}")
        elif response.status_code >= 400:
            media = response.headers.get("content-type") or [""]  # header values are lists
            assert media[0].startswith("application/problem+json"), \
                f"{label}: {response.status_code} {response.text[:200]}"

    check()


def test_generated_requests_never_get_a_server_error(server: tuple[LiveServer, str]) -> None:
    import schemathesis

    live, key = server
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    failures: list[str] = []
    for operation in operations:
        _fuzz(operation, live.url, key, failures)
    assert not failures, "\n".join(failures)
