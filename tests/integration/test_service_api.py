"""The HTTP service, served for real (uvicorn on a loopback port): every endpoint, its auth
(401/403), its problem+json errors (422 naming the field), the rate limit (429), what-if and
posted books equal to `compute --json` to 1e-12, the audit trail and the event stream."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from typer.testing import CliRunner

from margin_engine.cli.app import app as cli
from margin_engine.core.errors import InputError
from margin_engine.service.settings import ServiceSettings
from margin_engine.store.base import EventKind, open_store
from tests.conftest import assert_documents_close
from tests.integration.service_helpers import (
    SHARED_DATA,
    LiveServer,
    crash_store,
    live_server,
    make_key,
    stored_metrics,
)

runner = CliRunner()
PROBLEM = "application/problem+json"
MARKET: dict[str, Any] = {
    "schema": "margin-engine/market/v1", "timestamp": "2025-06-01T00:00:00Z",
    "underlyings": {"BTC": {"index": 65000, "vol": {"type": "flat", "sigma": 0.55}},
                    "ETH": {"index": 2500, "vol": {"type": "flat", "sigma": 0.65}}},
    "assets": {"USDC": {"price": 0.9995}, "USD": {"price": 1}, "BTC": {"price": 65000},
               "ETH": {"price": 2500}},
    "correlation": {"BTC": {"ETH": 0.8}}}
ALICE_POSITIONS = [("BTC-27JUN25-75000-C", -1.0, 900.0), ("BTC-PERP", 2.0, 64000.0),
                   ("ETH-PERP", -10.0, 2600.0)]
ALICE_COLLATERAL = {"BTC": 0.5, "USDC": 100000.0}


class Service:
    def __init__(self, server: LiveServer, store: str, keys: dict[str, str],
                 folder: Path) -> None:
        self.server, self.store, self.keys, self.folder = server, store, keys, folder

    def client(self, key: str | None = None) -> Any:
        return self.server.client(self.keys[key] if key else None)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    folder = tmp_path_factory.mktemp("service")
    market = folder / "market.json"
    market.write_text(json.dumps(MARKET))
    store = f"sqlite:{folder / 'service.db'}"
    keys = {"admin": make_key(store, "admin", label="ops"),
            "alice": make_key(store, "trade", account="alice"),
            "alice_read": make_key(store, "read", account="alice"),
            "bob": make_key(store, "trade", account="bob"),
            "unbound": make_key(store, "read"),
            "slow": make_key(store, "read", account="alice", rate_per_second=0.5, burst=2),
            "revoked": make_key(store, "admin")}
    result = runner.invoke(cli, ["keys", "revoke", keys["revoked"].split(".")[1],
                                 "--store", store])
    assert result.exit_code == 0, result.output
    settings = ServiceSettings(store=store, market=market, rate_per_second=1000, burst=1000)
    with live_server(settings) as server:
        svc = Service(server, store, keys, folder)
        with svc.client("admin") as admin:
            for name, mode in (("alice", "portfolio"), ("bob", "cross")):
                assert admin.put(f"/v1/accounts/{name}", json={"mode": mode}).status_code == 201
            for instrument, size, entry in ALICE_POSITIONS:
                response = admin.put(f"/v1/accounts/alice/positions/{instrument}",
                                     json={"size": size, "entry_price": entry})
                assert response.status_code == 200, response.text
            for asset, amount in ALICE_COLLATERAL.items():
                assert admin.put(f"/v1/accounts/alice/collateral/{asset}",
                                 json={"amount": amount}).status_code == 200
            admin.put("/v1/accounts/bob/positions/ETH-PERP",
                      json={"size": 5, "entry_price": 2400})
            admin.put("/v1/accounts/bob/collateral/USDC", json={"amount": 5000})
        yield svc


def _cli_compute(folder: Path, portfolio: dict[str, Any], model: str,
                 explain: bool = False, liquidation: str = "auto") -> dict[str, Any]:
    path = folder / f"portfolio-{model}.json"
    path.write_text(json.dumps(portfolio))
    args = ["compute", str(path), "--market", str(folder / "market.json"), "--model", model,
            "--json", "--liquidation-prices", liquidation, *(["--explain"] if explain else [])]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def _problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith("/problems/")
    return body


def _alice(positions: list[tuple[str, float, float]], collateral: dict[str, float],
           mode: str = "portfolio") -> dict[str, Any]:
    return {"id": "alice", "mode": mode, "collateral": collateral,
            "positions": [{"instrument": i, "size": s, "entry_price": e}
                          for i, s, e in positions]}


@pytest.mark.parametrize("model", ["account", "isolated", "cross", "portfolio"])
def test_what_if_before_and_after_equal_cli_compute(service: Service, model: str) -> None:
    orders = [{"instrument": "BTC-PERP", "size": 1, "price": 65500},  # adds: average entry
              {"instrument": "ETH-PERP", "size": 4, "price": 2450},  # reduces: realises P&L
              {"instrument": "BTC-27JUN25-60000-P", "size": 2, "price": 700}]  # opens
    with service.client("alice") as client:
        response = client.post("/v1/accounts/alice/what-if",
                               json={"orders": orders, "model": model})
    assert response.status_code == 200, response.text
    result = response.json()
    # Closing 4 of the 10 short ETH-PERP entered at 2,600 at 2,450: 4 x 150 = 600 USD realised.
    assert result["realised_pnl"] == pytest.approx(600.0, rel=1e-15)
    before = _alice(ALICE_POSITIONS, ALICE_COLLATERAL)
    after = _alice([("BTC-27JUN25-75000-C", -1.0, 900.0),
                    ("BTC-PERP", 3.0, (2 * 64000.0 + 65500.0) / 3),  # 64,500
                    ("ETH-PERP", -6.0, 2600.0), ("BTC-27JUN25-60000-P", 2.0, 700.0)],
                   {**ALICE_COLLATERAL, "USD": 600.0})
    for key, account in (("before", before), ("after", after)):
        want = _cli_compute(service.folder, {"schema": "margin-engine/portfolio/v1",
                                             "accounts": [account]}, model)
        assert_documents_close(result[key], want["accounts"][0], rel=1e-12, path=key)
    change = result["change"]
    assert change["initial_margin"] == pytest.approx(
        result["after"]["initial_margin"] - result["before"]["initial_margin"], rel=1e-15)
    # Filled away from the marks: equity moves by the fills' P&L at the mark:
    # BTC-PERP 1 x (65,000 - 65,500) + ETH 4 x (2,500 - 2,450) + put 2 x (mark - 700).
    assert set(result["after"]["underlyings"]) == {"BTC", "ETH"}
    for cell in result["after"]["underlyings"].values():
        assert "liquidation_prices" in cell


@pytest.mark.parametrize("model", ["account", "isolated", "cross", "portfolio", "sensitivity"])
def test_posted_book_equals_cli_compute(service: Service, model: str) -> None:
    portfolio = {"schema": "margin-engine/portfolio/v1", "accounts": [
        _alice(ALICE_POSITIONS, ALICE_COLLATERAL),
        {"id": "iso", "mode": "isolated", "collateral": {"USDC": 20000},
         "positions": [{"instrument": "ETH-PERP", "size": 10, "entry_price": 2400,
                        "leverage": 5}]}]}
    # Liquidation prices (a root search each) for one model here; what-if checks them all.
    liquidation = "auto" if model == "account" else "off"
    with service.client("unbound") as client:
        response = client.post("/v1/margin", json={"portfolio": portfolio, "market": MARKET,
                                                   "model": model, "explain": True,
                                                   "liquidation_prices": liquidation})
    assert response.status_code == 200, response.text
    want = _cli_compute(service.folder, portfolio, model, explain=True, liquidation=liquidation)
    assert_documents_close(response.json(), want, rel=1e-12)


def test_no_key_is_401_and_a_revoked_or_forged_key_too(service: Service) -> None:
    with service.client() as anonymous:
        body = _problem(anonymous.get("/v1/accounts/alice"), 401)
        assert "API key" in body["detail"]
        assert anonymous.get("/v1/accounts/alice").headers["www-authenticate"].startswith(
            "Bearer")
    with service.client("revoked") as revoked:
        _problem(revoked.get("/v1/pool/health"), 401)
    key_id = service.keys["admin"].split(".")[1]
    with service.server.client(f"me.{key_id}.{'A' * 43}") as forged:
        _problem(forged.get("/v1/pool/health"), 401)


def test_account_keys_see_only_their_account_and_scopes_are_enforced(service: Service) -> None:
    with service.client("alice") as alice:
        assert alice.get("/v1/accounts/alice").status_code == 200
        body = _problem(alice.get("/v1/accounts/bob"), 403)
        assert "bob" in body["detail"]
        _problem(alice.get("/v1/accounts/bob/margin"), 403)
        _problem(alice.post("/v1/accounts/bob/what-if", json={
            "orders": [{"instrument": "ETH-PERP", "size": 1, "price": 2500}]}), 403)
        _problem(alice.put("/v1/accounts/bob/positions/ETH-PERP",
                           json={"size": 1, "entry_price": 2500}), 403)
        _problem(alice.get("/v1/pool/health"), 403)  # the pool is admin's
        _problem(alice.put("/v1/accounts/carol", json={"mode": "cross"}), 403)
        assert [a["id"] for a in alice.get("/v1/accounts").json()["accounts"]] == ["alice"]
    with service.client("alice_read") as reader:
        assert reader.get("/v1/accounts/alice/positions").status_code == 200
        body = _problem(reader.put("/v1/accounts/alice/collateral/USDC",
                                   json={"amount": 1}), 403)
        assert "trade" in body["detail"]
    with service.client("unbound") as unbound:
        _problem(unbound.get("/v1/accounts/alice"), 403)


def test_bad_portfolio_is_422_naming_the_field_path_value_and_expectation(
        service: Service) -> None:
    portfolio = {"schema": "margin-engine/portfolio/v1", "accounts": [
        _alice(ALICE_POSITIONS, ALICE_COLLATERAL),
        {"id": "b", "mode": "cross", "collateral": {"USDC": 1000},
         "positions": [{"instrument": "ETH-PERP", "size": 1, "entry_price": 2400},
                       {"instrument": "BTC-PERP", "size": "12x", "entry_price": 60000}]}]}
    with service.client("admin") as client:
        body = _problem(client.post("/v1/margin", json={"portfolio": portfolio,
                                                        "market": MARKET}), 422)
        (error,) = body["errors"]
        assert error["field"] == "portfolio.accounts[1].positions[1].size"
        assert error["value"] == "12x"
        assert "number" in error["expected"]
        bad_market = {**MARKET, "underlyings": {
            **MARKET["underlyings"], "ETH": {"index": -5, "vol": {"type": "flat",
                                                                  "sigma": 0.6}}}}
        body = _problem(client.post("/v1/margin", json={"portfolio": portfolio,
                                                        "market": bad_market}), 422)
        assert body["errors"][0]["field"].startswith("portfolio.") or \
            body["errors"][0]["field"] == "market.underlyings.ETH.index"
        body = _problem(client.post("/v1/margin", json={
            "portfolio": {"schema": "margin-engine/portfolio/v1",
                          "accounts": [_alice(ALICE_POSITIONS, ALICE_COLLATERAL)]},
            "market": bad_market}), 422)
        assert body["errors"][0]["field"] == "market.underlyings.ETH.index"
        assert body["errors"][0]["value"] == -5
        valid = {"schema": "margin-engine/portfolio/v1",
                 "accounts": [_alice(ALICE_POSITIONS, ALICE_COLLATERAL)]}
        body = _problem(client.post("/v1/margin", json={
            "portfolio": valid, "market": MARKET, "model": "var"}), 422)
        assert body["errors"][0]["field"] == "model"
        body = _problem(client.post("/v1/accounts/alice/what-if", json={
            "orders": [{"instrument": "BTC-32JUN25", "size": 1, "price": 1}]}), 422)
        assert body["errors"][0]["field"] == "orders[0].instrument"
        body = _problem(client.post("/v1/accounts/alice/what-if", json={
            "orders": [{"instrument": "BTC-PERP", "size": 1, "price": -1}]}), 422)
        assert body["errors"][0]["field"] == "orders[0].price"
        body = _problem(client.put("/v1/accounts/alice/positions/BTC-PERP",
                                   json={"size": 1, "entry_price": 0}), 422)
        assert body["errors"][0]["field"] == "entry_price"
        # JSON true and false are no numbers (before: taken as 1 and 0, and the order priced)
        for order, field in (({"instrument": "BTC-PERP", "size": True, "price": 60000},
                              "orders[0].size"),
                             ({"instrument": "BTC-PERP", "size": 1, "price": True},
                              "orders[0].price")):
            body = _problem(client.post("/v1/accounts/alice/what-if",
                                        json={"orders": [order]}), 422)
            assert body["errors"][0]["field"] == field
            assert body["errors"][0]["value"] is True
            assert "not true or false" in body["errors"][0]["expected"]
        body = _problem(client.put("/v1/accounts/alice/positions/BTC-PERP",
                                   json={"size": True, "entry_price": 60000}), 422)
        assert body["errors"][0]["field"] == "size"
        body = _problem(client.put("/v1/accounts/alice/collateral/USDC",
                                   json={"amount": True}), 422)
        assert body["errors"][0]["field"] == "amount"


def test_a_body_repeating_a_key_is_422_naming_the_key(service: Service) -> None:
    """JSON keeps the last of a repeated key without a word: an order's "size": 1 then
    "size": 100 was a what-if of 100 contracts (before: answered 200 with that what-if)."""
    raw = (b'{"orders": [{"instrument": "BTC-PERP", "size": 1, "size": 100, '
           b'"price": 60000}]}')
    with service.client("admin") as client:
        body = _problem(client.post("/v1/accounts/alice/what-if", content=raw,
                                    headers={"content-type": "application/json"}), 422)
        assert body["errors"][0]["field"] == "body"
        assert body["errors"][0]["expected"] == \
            "valid JSON (the key 'size' is given twice in an object)"
        body = _problem(client.put("/v1/accounts/alice/collateral/USDC",
                                   content=b'{"amount": 5, "amount": 9}',
                                   headers={"content-type": "application/json"}), 422)
        assert "'amount' is given twice" in body["errors"][0]["expected"]
        ok = client.post("/v1/accounts/alice/what-if", content=raw.replace(b'"size": 100, ', b""),
                         headers={"content-type": "application/json"})
        assert ok.status_code == 200, ok.text


def test_a_position_in_an_instrument_expired_at_the_market_time_is_refused(
        service: Service) -> None:
    """The market is at 2025-06-01: BTC-30MAY25 (a future, and a call) and BTC-31MAY25 (a
    put) expired at 08:00 UTC on those days. Such a position was stored (200) and settled at
    once at the index: a mistyped expiry put a settled position in a live book without a
    word. Now 422 naming the instrument and its expiry (as a what-if's order in it is);
    nothing is written; a live expiry, and removing a position, still work."""
    with service.client("admin") as admin:
        before = admin.get("/v1/accounts/alice").json()
        for name in ("BTC-30MAY25", "BTC-30MAY25-60000-C", "BTC-31MAY25-60000-P"):
            body = _problem(admin.put(f"/v1/accounts/alice/positions/{name}",
                                      json={"size": 1, "entry_price": 60000}), 422)
            error = body["errors"][0]
            assert error["field"] == "instrument"
            assert error["value"] == name
            assert "trades at the market's time 2025-06-01T00:00:00Z" in error["expected"]
        assert admin.get("/v1/accounts/alice").json() == before
        live = admin.put("/v1/accounts/alice/positions/BTC-2JUN25",
                         json={"size": 1, "entry_price": 65000})
        assert live.status_code == 200, live.text
        assert admin.delete("/v1/accounts/alice/positions/BTC-2JUN25").status_code == 200
        assert admin.get("/v1/accounts/alice").json()["positions"] == before["positions"]


def test_an_account_id_a_book_may_hold_is_one_the_routes_take(service: Service) -> None:
    """Books take any printable id of at most 256 characters ('Zürich 账户-7'); the routes took
    [A-Za-z0-9._:@-]{1,64} only, so such an account of the monitor's book could be neither
    read nor given a key (422, and `keys create` refused it). Now the routes and the keys take
    the books' rule, and refuse, naming the character, what books refuse."""
    name = "Zürich 账户-7"
    path = "/v1/accounts/" + quote(name, safe="")
    with service.client("admin") as admin:
        assert admin.put(path, json={"mode": "cross"}).status_code == 201
        admin.put(f"{path}/collateral/USDC", json={"amount": 5000})
        admin.put(f"{path}/positions/BTC-PERP", json={"size": 0.1, "entry_price": 65000})
        assert admin.get(path).json()["id"] == name
        for bad, said in (("evil\x1b[2J", "U+001B at position 5"),
                          ("a" * 257, "at most 256 characters"),
                          (" padded", "spaces at its ends"), ("rtl\u202eabc", "U+202E")):
            body = _problem(admin.get("/v1/accounts/" + quote(bad, safe="")), 422)
            assert body["errors"][0]["field"] == "path.account_id"
            assert said in body["errors"][0]["expected"]
    key = make_key(service.store, "trade", account=name)
    with service.server.client(key) as trader:
        margin = trader.get(f"{path}/margin")
        assert margin.status_code == 200, margin.text
        assert margin.json()["account"]["id"] == name
        _problem(trader.get("/v1/accounts/alice"), 403)
    with pytest.raises(InputError, match="U\\+000A"):
        make_key(service.store, "trade", account="two\nlines")
    with service.client("admin") as admin:
        assert admin.delete(path).status_code == 200


def test_rate_limit_is_429_with_retry_after(service: Service) -> None:
    with service.client("slow") as client:  # 0.5 a second, bucket of 2
        statuses = [client.get("/v1/accounts/alice").status_code for _ in range(3)]
        assert statuses[:2] == [200, 200]
        body = _problem(client.get("/v1/accounts/alice"), 429)
        assert "rate limit" in body["detail"]
        assert int(client.get("/v1/accounts/alice").headers["retry-after"]) >= 1


def test_accounts_crud_every_change_audited_with_the_key_id(service: Service) -> None:
    with service.client("admin") as admin:
        created = admin.put("/v1/accounts/carol", json={"mode": "cross"})
        assert created.status_code == 201
        assert admin.put("/v1/accounts/carol", json={"mode": "isolated"}).status_code == 200
        response = admin.put("/v1/accounts/carol/positions/BTC-PERP",
                             json={"size": -0.5, "entry_price": 66000})
        assert response.json()["positions"] == [
            {"instrument": "BTC-PERP", "size": -0.5, "entry_price": 66000.0}]
        admin.put("/v1/accounts/carol/collateral/USDC", json={"amount": 8000})
        assert admin.get("/v1/accounts/carol/collateral").json() == {"USDC": 8000.0}
        margin = admin.get("/v1/accounts/carol/margin").json()["account"]
        # isolated: 0.5 x 65,000 = 32,500 at 2 %: IM 650, MM 325.
        assert margin["initial_margin"] == pytest.approx(650.0, rel=1e-12)
        assert margin["maintenance_margin"] == pytest.approx(325.0, rel=1e-12)
        assert margin["positions"][0]["liquidation_prices"]["up"]["price"] > 65000
        assert admin.delete("/v1/accounts/carol/positions/BTC-PERP").json()["positions"] == []
        _problem(admin.delete("/v1/accounts/carol/positions/BTC-PERP"), 404)
        assert admin.delete("/v1/accounts/carol/collateral/USDC").json()["collateral"] == {}
        deleted = admin.delete("/v1/accounts/carol").json()
        _problem(admin.get("/v1/accounts/carol"), 404)
    admin_id = service.keys["admin"].split(".")[1]
    repository = open_store(service.store)
    try:
        audit = [(e.kind, json.loads(e.payload)) for _, e in repository.events()
                 if e.account == "carol"]
    finally:
        repository.close()
    assert [kind for kind, _ in audit] == [
        EventKind.ACCOUNT_PUT, EventKind.ACCOUNT_PUT, EventKind.POSITION_PUT,
        EventKind.COLLATERAL_PUT, EventKind.POSITION_DELETED, EventKind.COLLATERAL_DELETED,
        EventKind.ACCOUNT_DELETED]
    assert all(payload["key_id"] == admin_id for _, payload in audit)
    assert audit[1][1]["before"] == "cross"
    assert audit[1][1]["after"] == "isolated"
    assert deleted["event_seq"] > 0


def test_stream_sends_events_after_a_sequence_and_only_the_keys_account(
        service: Service) -> None:
    from websockets.sync.client import connect

    url = service.server.url.replace("http", "ws") + "/v1/stream"
    with connect(url + "?after=0", additional_headers={
            "Authorization": f"Bearer {service.keys['admin']}"}) as admin_ws, \
            connect(url) as alice_ws:
        alice_ws.send(json.dumps({"api_key": service.keys["alice"]}))  # a browser's way
        assert json.loads(admin_ws.recv(10))["type"] == "ready"
        assert json.loads(alice_ws.recv(10))["type"] == "ready"
        history = json.loads(admin_ws.recv(10))
        assert history["type"] == "events"
        assert EventKind.KEY_CREATED in {e["kind"] for e in history["events"]}
        with service.client("admin") as admin:
            for name in ("bob", "alice"):
                response = admin.put(f"/v1/accounts/{name}/collateral/USD", json={"amount": 10})
                assert response.status_code == 200, response.text
            # an asset the market does not price is refused, nothing stored or streamed
            body = _problem(admin.put("/v1/accounts/bob/collateral/USDT", json={"amount": 1}),
                            422)
            assert body["errors"][0]["field"] == "collateral.USDT"
        seen: list[dict[str, Any]] = []
        while not any(e["account"] == "alice" for e in seen):
            message = json.loads(admin_ws.recv(10))
            seen += message["events"]
        assert {e["account"] for e in seen if e["kind"] == EventKind.COLLATERAL_PUT} >= {
            "alice", "bob"}
        assert all(b["seq"] > a["seq"] for a, b in zip(seen, seen[1:], strict=False))
        mine = json.loads(alice_ws.recv(10))["events"]
        assert {e["account"] for e in mine} == {"alice"}
        assert mine[-1]["payload"]["after"] == 10
    with connect(url) as refused:
        refused.send(json.dumps({"api_key": service.keys["revoked"]}))
        assert json.loads(refused.recv(10))["status"] == 401


def test_openapi_problem_types_and_body_limit(service: Service) -> None:
    with service.client("admin") as client:
        spec = client.get("/openapi.json").json()
        assert {"/v1/margin", "/v1/accounts/{account_id}/what-if", "/v1/pool/health",
                "/v1/accounts/{account_id}/positions/{instrument}"} <= set(spec["paths"])
        assert "ApiKey" in spec["components"]["securitySchemes"]
        assert "not valid" in client.get("/problems/invalid-input").text
        _problem(client.get("/v1/nowhere"), 404)
        broken = client.post("/v1/margin", content=b'{"portfolio": ',
                             headers={"content-type": "application/json"})
        assert _problem(broken, 422)["errors"][0]["field"] == "body"
        big = client.post("/v1/margin", content=b"{" + b" " * (5 * 2**20) + b"}",
                          headers={"content-type": "application/json"})
        _problem(big, 413)


@pytest.fixture(scope="module")
def crash_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    if not (SHARED_DATA / "binance_btcusdt_perp_15m_window_2024-08-05.csv").exists():
        pytest.skip(f"the crash window files are not in {SHARED_DATA}")
    folder = tmp_path_factory.mktemp("crash")
    store = crash_store(folder / "crash.db", population=40)
    keys = {"admin": make_key(store, "admin"), "p1": make_key(store, "read", account="p00001")}
    with live_server(ServiceSettings(store=store, rate_per_second=1000, burst=1000)) as server:
        yield Service(server, store, keys, folder)


def test_pool_endpoints_serve_the_monitors_numbers(crash_service: Service) -> None:
    metrics = stored_metrics(crash_service.store)
    with crash_service.client("admin") as admin:
        health = admin.get("/v1/pool/health").json()["health"]
        assert health == metrics[-1]
        points: list[dict[str, Any]] = []
        after = 0
        while True:
            page = admin.get("/v1/pool/history", params={"after": after, "limit": 500}).json()
            points += page["points"]
            if page["next_after"] is None:
                break
            after = page["next_after"]
        assert points == metrics
        assert max(p["liquidatable"] for p in points) > 0  # the crash liquidates accounts
        risk = admin.get("/v1/pool/at-risk", params={"limit": 5}).json()
        assert risk["accounts"] == 40
        assert risk["tick"] == metrics[-1]["tick"]
        distances = [abs(a["distance_pct"]) for a in risk["at_risk"]]
        assert distances == sorted(distances)
        assert all(a["health"] >= 1 for a in risk["at_risk"])
        models = {m["model"]: m for m in admin.get("/v1/pool/efficiency").json()["models"]}
        assert set(models) == {"isolated", "cross", "portfolio", "sensitivity"}
        assert models["cross"]["efficiency"] == pytest.approx(
            models["cross"]["gross_notional"] / models["cross"]["initial_margin"])
        state = admin.get("/v1/pool/state").json()
        assert state["breaker"]["multiplier"] == metrics[-1]["multiplier"]
        assert state["time"] == metrics[-1]["time"]
        assert set(state["prices"]) == {"BTC", "ETH"}
    with crash_service.client("p1") as p1:
        margin = p1.get("/v1/accounts/p00001/margin").json()
        assert margin["tick"] == metrics[-1]["tick"]
        assert margin["account"]["model"] == "cross"
        # The account's own liquidation price is where its adjusted equity meets MM.
        assert margin["account"]["underlyings"]


def test_postgres_store_serves_keys_accounts_and_what_if(postgres_url: str) -> None:
    key = make_key(postgres_url, "admin")
    with live_server(ServiceSettings(store=postgres_url, market=None)) as server, \
            server.client(key) as admin:
        assert admin.put("/v1/accounts/pg", json={"mode": "cross"}).status_code == 201
        response = admin.put("/v1/accounts/pg/positions/BTC-PERP",
                             json={"size": 1, "entry_price": 60000})
        assert response.status_code == 200, response.text
        assert admin.get("/v1/accounts").json()["accounts"] == [{"id": "pg", "mode": "cross"}]
        body = _problem(admin.get("/v1/accounts/pg/margin"), 409)  # no market to margin at
        assert body["type"] == "/problems/no-market"
        assert admin.delete("/v1/accounts/pg").status_code == 200
    repository: Any = open_store(postgres_url)
    try:
        kinds = [e.kind for _, e in repository.events()]
        assert kinds == [EventKind.KEY_CREATED, EventKind.ACCOUNT_PUT, EventKind.POSITION_PUT,
                         EventKind.ACCOUNT_DELETED]
    finally:
        repository.close()
