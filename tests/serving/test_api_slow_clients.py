"""Slow and vanishing clients against a real server, over real sockets: a body
that stalls, a content-length longer than the body, clients that leave
mid-body. Each is answered or dropped within the body timeout, and logged in
a line at most, never with a traceback."""

from __future__ import annotations

import json
import logging
import select
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from test_serving import (
    AUTH,
    KEY,
    MERCHANT,
    RISKY,
    Server,
    metric,
    put_features,
    train_tiny_model,
    txn,
)
from test_serving import serving_settings as base_settings

from pitstore.core.config import Settings
from pitstore.serving.audit import count_records
from pitstore.serving.settings import ServingSettings

TIMEOUT_S = 1.5


def head(port: int, length: int) -> bytes:
    return (
        f"POST /v1/score HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
        f"authorization: Bearer {KEY}\r\ncontent-type: application/json\r\n"
        f"content-length: {length}\r\n\r\n"
    ).encode()


def open_stalled(port: int, n: int, declared: int, sent: bytes) -> list[socket.socket]:
    """``n`` connections that send headers and part of a body, then nothing."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(head(port, declared) + sent)
        socks.append(s)
    return socks


def drain_until_closed(socks: list[socket.socket], limit_s: float) -> tuple[list[bytes], float]:
    """What each socket received before the server closed it; when the last closed."""
    got = {s: b"" for s in socks}
    open_ = set(socks)
    started = time.monotonic()
    while open_ and time.monotonic() - started < limit_s:
        ready, _, _ = select.select(list(open_), [], [], 0.1)
        for s in ready:
            try:
                data = s.recv(65536)
            except ConnectionResetError:
                data = b""
            if data:
                got[s] += data
            else:
                open_.discard(s)
    took = time.monotonic() - started
    for s in socks:
        s.close()
    assert not open_, f"{len(open_)} of {len(socks)} stalled connections still open"
    return [got[s] for s in socks], took


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logged() -> Iterator[Lines]:
    """Every record of the server's loggers (uvicorn's do not propagate)."""
    handler = Lines()
    names = ["", "pitstore.serving", "uvicorn", "uvicorn.error"]
    for name in names:
        logging.getLogger(name).addHandler(handler)
    yield handler
    for name in names:
        logging.getLogger(name).removeHandler(handler)


@pytest.fixture
def served(settings: Settings) -> Iterator[tuple[Server, ServingSettings]]:
    train_tiny_model(settings.home)
    put_features(settings.redis_url, {**RISKY, **MERCHANT}, {})
    ss = base_settings(settings, body_timeout_s=TIMEOUT_S)
    with Server(ss) as server:
        yield server, ss


def test_stalled_bodies_are_cut_off(served: tuple[Server, ServingSettings]) -> None:
    server, ss = served
    body = json.dumps(txn()).encode()
    # 300 clients stalled mid-body; 1 that declared 50 bytes more than it sent
    stalled = open_stalled(server.port, 300, len(body), body[:100])
    liar = open_stalled(server.port, 1, len(body) + 50, body)
    answers, took = drain_until_closed(stalled + liar, limit_s=TIMEOUT_S + 10)
    assert took < TIMEOUT_S + 3, f"stalled connections lasted {took:.1f} s"
    for raw in answers:
        assert raw.startswith(b"HTTP/1.1 408 "), raw[:80]
        assert b"connection: close" in raw.lower()
    # the server is still fine, and decided nothing for them
    with httpx.Client(base_url=server.url, timeout=5, headers=AUTH) as http:
        assert http.post("/v1/score", json=txn()).status_code == 200
        text = http.get("/metrics").text
    assert metric(text, "pitstore_http_refused_total", reason="body_timeout") == 301
    assert count_records(ss.resolved_audit_dir) == 1


def test_clients_leaving_mid_body_are_one_line(
    served: tuple[Server, ServingSettings], logged: Lines
) -> None:
    server, _ = served
    body = json.dumps(txn()).encode()
    for s in open_stalled(server.port, 200, len(body), body[:100]):
        s.close()
    deadline = time.monotonic() + 5
    with httpx.Client(base_url=server.url, timeout=5, headers=AUTH) as http:
        while time.monotonic() < deadline:
            text = http.get("/metrics").text
            if metric(text, "pitstore_http_refused_total", reason="disconnect") == 200:
                break
            time.sleep(0.1)
        assert metric(text, "pitstore_http_refused_total", reason="disconnect") == 200
        assert http.post("/v1/score", json=txn()).status_code == 200
    assert not [r for r in logged.records if r.exc_info], "a traceback was logged"
    warnings = [r for r in logged.records if r.levelno >= logging.WARNING]
    assert len(warnings) <= 2, [r.getMessage() for r in warnings]
    assert "disconnected" in warnings[0].getMessage()
