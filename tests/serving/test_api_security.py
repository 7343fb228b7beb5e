"""The scoring API's door: API keys and scopes, JSON only, body limits, card
tokens, readiness that tells an empty online store, and one decision per
transaction_id. A real uvicorn server, a real Redis, the real audit log."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from test_serving import (
    AUTH,
    CALM,
    MERCHANT,
    RISKY,
    Server,
    metric,
    put_features,
    serving_settings,
    train_tiny_model,
    txn,
)
from typer.testing import CliRunner

from pitstore.cli.app import app as cli
from pitstore.core.config import Settings
from pitstore.serving.app import create_app
from pitstore.serving.audit import count_records, iter_records
from pitstore.serving.auth import KeyConfigError, entry_for, looks_like_pan, new_key
from pitstore.serving.settings import ServingSettings

PAN = "4111111111111111"  # the classic Visa test number: 16 digits, passes Luhn
SCORER, READER = new_key(), new_key()


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def keyed(settings: Settings, **over: object) -> ServingSettings:
    entries = ";".join(
        [entry_for("gateway", SCORER, ["score"]), entry_for("analyst", READER, ["decisions:read"])]
    )
    # AUTH's key (every scope) stays valid too: test_serving's helpers use it
    from test_serving import KEY

    entries += ";" + entry_for("all", KEY, ["score", "decisions:read"])
    return serving_settings(settings, api_keys=entries, **over)


@pytest.fixture
def served(settings: Settings) -> Iterator[tuple[Server, ServingSettings]]:
    train_tiny_model(settings.home)
    put_features(settings.redis_url, {**RISKY, **CALM, **MERCHANT}, {})
    ss = keyed(settings)
    with Server(ss) as server:
        yield server, ss


def test_keys_and_scopes(served: tuple[Server, ServingSettings]) -> None:
    server, ss = served
    with httpx.Client(base_url=server.url, timeout=5) as http:
        # open: health, readiness, metrics (no transaction data in them)
        assert http.get("/healthz").status_code == 200
        assert http.get("/readyz").status_code == 200
        assert http.get("/metrics").status_code == 200
        # no key, a wrong key, a malformed header: 401, with the challenge
        for headers in (
            {},
            bearer(new_key()),
            {"authorization": SCORER},
            {"authorization": "Bearer"},
        ):
            r = http.post("/v1/score", json=txn(), headers=headers)
            assert r.status_code == 401, headers
            assert r.headers["www-authenticate"].startswith("Bearer")
        assert http.get("/v1/decisions/20260101-" + "0" * 32).status_code == 401
        assert http.get("/openapi.json").status_code == 401
        # the right key, the wrong scope: 403
        r = http.post("/v1/score", json=txn(), headers=bearer(READER))
        assert r.status_code == 403 and "score" in r.json()["error"]
        made = http.post("/v1/score", json=txn(), headers=bearer(SCORER))
        assert made.status_code == 200
        decision_id = made.json()["decision_id"]
        r = http.get(f"/v1/decisions/{decision_id}", headers=bearer(SCORER))
        assert r.status_code == 403 and "decisions:read" in r.json()["error"]
        r = http.get(f"/v1/decisions/{decision_id}", headers=bearer(READER))
        assert r.status_code == 200 and r.json()["decision_id"] == decision_id
        assert http.get("/openapi.json", headers=bearer(READER)).status_code == 200
        text = http.get("/metrics").text
    assert metric(text, "pitstore_auth_failures_total", status="401") == 6
    assert metric(text, "pitstore_auth_failures_total", status="403") == 2
    assert count_records(ss.resolved_audit_dir) == 1  # refused requests decide nothing


def test_json_only_and_body_limits(served: tuple[Server, ServingSettings]) -> None:
    server, ss = served
    body = json.dumps(txn()).encode()
    with httpx.Client(base_url=server.url, timeout=5, headers=AUTH) as http:
        # a browser's "simple" cross-origin POST types, and no type at all: 415
        for media in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
            r = http.post("/v1/score", content=body, headers={"content-type": media})
            assert r.status_code == 415, media
        r = http.post("/v1/score", content=body, headers={"content-type": ""})
        assert r.status_code == 415
        ok = http.post(
            "/v1/score", content=body, headers={"content-type": "application/json; charset=utf-8"}
        )
        assert ok.status_code == 200
        # over the limit by content-length: 413 and the connection is closed
        big = json.dumps(txn(transaction_id="t-big", device_id="x" * 9_000)).encode()
        r = http.post("/v1/score", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.headers["connection"] == "close"
        text = http.get("/metrics").text
    assert metric(text, "pitstore_http_refused_total", reason="media_type") == 4
    assert metric(text, "pitstore_http_refused_total", reason="too_large") == 1
    assert count_records(ss.resolved_audit_dir) == 1


def test_no_card_number_is_stored_or_returned(
    served: tuple[Server, ServingSettings], settings: Settings
) -> None:
    server, ss = served
    assert looks_like_pan(PAN) and looks_like_pan("4111 1111 1111 1111")
    assert not looks_like_pan("4111111111111112") and not looks_like_pan("C1")
    with httpx.Client(base_url=server.url, timeout=5, headers=AUTH) as http:
        first = http.post("/v1/score", json=txn(transaction_id="t-pan-1", card_id=PAN))
        second = http.post("/v1/score", json=txn(transaction_id="t-pan-2", card_id=PAN))
        other = http.post("/v1/score", json=txn(transaction_id="t-pan-3", card_id="C1"))
        assert first.status_code == second.status_code == 200
        token = first.json()["request"]["card_id"]
        # a keyed hash: the same card links its decisions, another card differs
        assert token.startswith("tok_") and len(token) == 36
        assert second.json()["request"]["card_id"] == token
        assert other.json()["request"]["card_id"] not in (token, "C1")
        looked_up = http.get(f"/v1/decisions/{first.json()['decision_id']}")
        assert PAN not in looked_up.text and PAN not in first.text
    for path in Path(ss.resolved_audit_dir).rglob("*.jsonl"):
        assert PAN.encode() not in path.read_bytes()
    # the key lives in the home's secrets (0600), and survives a restart: same token
    key_file = settings.home / "secrets" / "card-token.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    with (
        Server(keyed(settings)) as again,
        httpx.Client(base_url=again.url, timeout=5, headers=AUTH) as http,
    ):
        r = http.post("/v1/score", json=txn(transaction_id="t-pan-4", card_id=PAN))
        assert r.json()["request"]["card_id"] == token


def test_bad_key_settings_stop_the_server(settings: Settings, tmp_path: Path) -> None:
    for entries in ("gw:" + "0" * 63 + ":score", f"gw:{'a' * 64}:admin", SCORER):
        with pytest.raises(KeyConfigError):
            create_app(serving_settings(settings, api_keys=entries))
    # the CLI's one line (no traceback), exit 2, and the key never echoed
    out = CliRunner().invoke(
        cli,
        ["serve"],
        env={"PITSTORE_API_KEYS": f"gw:{SCORER}:score", "PITSTORE_HOME": str(tmp_path)},
    )
    assert out.exit_code == 2 and "Traceback" not in out.output and SCORER not in out.output


def test_a_key_from_the_cli_works(settings: Settings, tmp_path: Path) -> None:
    out = CliRunner().invoke(cli, ["keys", "new", "--scope", "score", "--name", "gw-2"])
    assert out.exit_code == 0, out.output
    key = out.output.split("Bearer <key>'): ", 1)[1].split()[0]
    entry = out.output.rsplit("keys file: ", 1)[1].strip()
    assert entry.startswith("gw-2:") and entry.endswith(":score") and key not in entry
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# the gateway\n{entry}\n")
    train_tiny_model(settings.home)
    put_features(settings.redis_url, {**RISKY, **MERCHANT}, {})
    with (
        Server(serving_settings(settings, api_keys="", api_keys_file=keys_file)) as server,
        httpx.Client(base_url=server.url, timeout=5) as http,
    ):
        assert http.post("/v1/score", json=txn(), headers=bearer(key)).status_code == 200
        assert http.post("/v1/score", json=txn(), headers=AUTH).status_code == 401


def test_readiness_tells_an_empty_online_store_and_a_failing_audit_log(
    settings: Settings, tmp_path: Path
) -> None:
    train_tiny_model(settings.home)
    put_features(settings.redis_url, {**RISKY, **MERCHANT}, {})
    ss = serving_settings(settings)
    with Server(ss) as server, httpx.Client(base_url=server.url, timeout=5, headers=AUTH) as http:
        ready = http.get("/readyz").json()
        assert ready["ready"] and ready["reasons"] == [] and ready["audit"] == "ok"
        assert set(ready["materialized"]) == {"account_hourly", "account_daily", "merchant_daily"}
        # Redis restarted empty: reachable, but every account would be "unknown"
        redis.Redis.from_url(settings.redis_url).flushall()
        r = http.get("/readyz")
        assert r.status_code == 503 and r.json()["redis"] is True and not r.json()["ready"]
        assert any("not materialized" in why for why in r.json()["reasons"])
        put_features(settings.redis_url, {**RISKY, **MERCHANT}, {})
        assert http.get("/readyz").status_code == 200
    # the audit log's directory cannot be made: not ready, and no decision
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with (
        Server(serving_settings(settings, audit_dir=blocker / "audit")) as server,
        httpx.Client(base_url=server.url, timeout=5, headers=AUTH) as http,
    ):
        r = http.get("/readyz")
        assert r.status_code == 503 and "audit log" in " ".join(r.json()["reasons"])
        r = http.post("/v1/score", json=txn())
        assert r.status_code == 503 and "audit" in r.json()["error"]
        assert "audit log write failed" in http.get("/readyz").json()["audit"]


def test_a_retry_gets_the_first_decision(settings: Settings) -> None:
    train_tiny_model(settings.home)
    put_features(settings.redis_url, {**RISKY, **CALM, **MERCHANT}, {})
    ss = serving_settings(settings)
    with Server(ss) as server, httpx.Client(base_url=server.url, timeout=5, headers=AUTH) as http:
        first = http.post("/v1/score", json=txn(transaction_id="t-retry"))
        again = http.post("/v1/score", json=txn(transaction_id="t-retry"))
        assert first.status_code == again.status_code == 200
        assert again.json() == first.json() and again.headers["idempotent-replay"] == "true"
        # the same id for another transaction: refused, naming the first decision
        clash = http.post("/v1/score", json=txn(transaction_id="t-retry", amount=999))
        assert clash.status_code == 409
        assert clash.json()["decision_id"] == first.json()["decision_id"]

        # retries racing the first request: one decision between them
        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server.url, timeout=5, headers=AUTH) as client:
                body = txn(transaction_id="t-race", account_id="A_CALM")
                return await asyncio.gather(
                    *(client.post("/v1/score", json=body) for _ in range(8))
                )

        raced = asyncio.run(burst())
        assert {r.status_code for r in raced} == {200}
        assert len({r.json()["decision_id"] for r in raced}) == 1
        text = http.get("/metrics").text
    assert metric(text, "pitstore_score_replays_total") == 8
    assert count_records(ss.resolved_audit_dir) == 2
    # after a restart the audit log answers: still the first decision, none added
    with Server(ss) as server, httpx.Client(base_url=server.url, timeout=5, headers=AUTH) as http:
        after = http.post("/v1/score", json=txn(transaction_id="t-retry"))
        assert after.status_code == 200
        assert after.json()["decision_id"] == first.json()["decision_id"]
        assert after.json()["score"] == first.json()["score"]
        assert (
            http.post("/v1/score", json=txn(transaction_id="t-retry", amount=9)).status_code == 409
        )
    ids = [r["transaction_id"] for r in iter_records(ss.resolved_audit_dir)]
    assert sorted(ids) == ["t-race", "t-retry"]
