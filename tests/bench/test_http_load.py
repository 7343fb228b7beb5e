"""The benchmark's load client (bench/http_load.py) against a tiny asyncio HTTP server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from bench.http_load import closed_loop, encode_post, open_loop


async def serve(delay: float) -> tuple[asyncio.Server, int]:
    """Answers every POST with its own body after ``delay`` s, one at a time per connection."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                body = await reader.readexactly(length)
                await asyncio.sleep(delay)
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    + f"content-length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def requests(port: int, n: int) -> list[bytes]:
    return [encode_post("127.0.0.1", port, "/x", json.dumps({"i": i}).encode()) for i in range(n)]


def test_closed_loop_answers_match_requests() -> None:
    async def go() -> None:
        server, port = await serve(0.0)
        async with server:
            run = await closed_loop("127.0.0.1", port, requests(port, 300), 4, 10)
        assert run.transport_errors == 0 and len(run.statuses) == 300
        assert set(run.statuses) == {200}
        for i, body in zip(run.indices, run.bodies, strict=True):
            assert json.loads(body) == {"i": i}

    asyncio.run(go())


def test_open_loop_counts_queueing_from_the_scheduled_time() -> None:
    """One connection, 20 ms per answer, 100 arrivals/s: the server keeps up with
    only 50/s, so a backlog builds and latency must grow with it (a client that
    timed from the actual send would report ~20 ms throughout)."""

    async def go() -> None:
        server, port = await serve(0.02)
        async with server:
            run = await open_loop("127.0.0.1", port, requests(port, 60), 100.0, connections=1)
        assert len(run.statuses) == 60 and run.transport_errors == 0
        by_index = dict(zip(run.indices, run.latencies_s, strict=True))
        assert by_index[59] > by_index[0] + 0.2  # ~30 requests of backlog by the end
        assert run.summary()["p99_ms"] > 200  # type: ignore[operator]

    asyncio.run(go())


def test_open_loop_tells_a_server_backlog_from_client_lag() -> None:
    """Behind a backlog (one connection, the server at half the arrival rate) the
    sends are late by hundreds of ms, but none of that is the client's own lag:
    each request went out as soon as the connection was free."""

    async def go() -> None:
        server, port = await serve(0.02)
        async with server:
            run = await open_loop("127.0.0.1", port, requests(port, 60), 100.0, connections=1)
        figures = run.summary()
        assert figures["send_late_p99_ms"] > 200  # type: ignore[operator]
        assert figures["client_send_lag_p99_ms"] < 20  # type: ignore[operator]

    asyncio.run(go())


def test_open_loop_with_free_connections_sends_on_time() -> None:
    async def go() -> None:
        server, port = await serve(0.0)
        async with server:
            run = await open_loop("127.0.0.1", port, requests(port, 100), 200.0, connections=8)
        assert run.transport_errors == 0 and len(run.statuses) == 100
        figures = run.summary()
        # Nothing waits for a connection, so all lateness is the client's own.
        assert figures["send_late_p99_ms"] == figures["client_send_lag_p99_ms"]
        assert figures["client_send_lag_p99_ms"] < 50  # type: ignore[operator]

    asyncio.run(go())


def test_a_lagging_client_makes_a_latency_unjudged() -> None:
    from bench.score_verdict import client_bound

    assert client_bound({"p99_ms": 100.0, "client_send_lag_p99_ms": 20.0})
    assert not client_bound({"p99_ms": 100.0, "client_send_lag_p99_ms": 5.0})
    assert not client_bound({"p99_ms": 2.0, "client_send_lag_p99_ms": 0.9})  # under 1 ms
    assert not client_bound({"p99_ms": 2.0})  # closed loop: no schedule to lag behind


def test_the_score_verdict_counts_fallback_answers_against_the_goal() -> None:
    from bench.score_verdict import score_goal_met as met

    # Judged against the no-op plus the same durable audit append (goal <= 1.5x).
    assert met(0, True, 0.0, [], 1.4) is True
    assert met(0, True, 0.15, [], 1.4) is False  # rules instead of the model at 70% load
    assert met(0, True, 0.01, [], 1.5) is True  # the bounds themselves pass
    assert met(1, True, 0.0, [], 1.0) is False  # an error, whatever the latency
    assert met(0, False, 0.0, [], 1.0) is False  # the audit log disagrees with the answers
    assert met(0, True, 0.0, ["no-op"], 1.4) is None  # latencies measured on the client
    assert met(0, True, 0.0, [], 1.6) is False
    assert met(0, True, 0.0, [], 1.0, reference_errors=3) is None  # no yardstick


def test_sheds_are_counted_apart_from_errors() -> None:
    from bench.http_load import Run
    from bench.score_load import Checker
    from bench.score_verdict import score_goal_met as met
    from pitstore.serving.admission import SHED_BODY

    run = Run("closed", 1.0)
    ok = b'{"transaction_id":"t-0","decision":"approve","fallback":false}'
    run.record(0, 200, ok, 0.001)
    run.record(1, 503, SHED_BODY, 0.001)  # admission control refusing on purpose
    run.record(2, 503, b'{"error":"internal error; no decision"}', 0.001)  # a failure
    run.record(3, 500, b"", 0.001)
    out = Checker(True).check(run, "t")
    assert out["sheds"] == 1 and out["errors"] == 2 and out["wrong_answers"] == 0
    # open-loop sheds past 1% of the requests miss the goal; at or under it, they do not
    assert met(0, True, 0.0, [], 1.4, shed_share=0.01) is True
    assert met(0, True, 0.0, [], 1.4, shed_share=0.02) is False


def test_the_no_op_s_own_figures_tell_an_unsteady_machine() -> None:
    from bench.score_verdict import noop_unsteady

    # recorded runs (bench/results history): a quiet one, then one of each kind
    quiet = noop_unsteady({"p50_ms": 0.219}, {"p50_ms": 0.186, "p99_ms": 0.532})
    assert quiet is None
    overloaded = noop_unsteady({"p50_ms": 6.37}, {"p50_ms": 0.244, "p99_ms": 1.69})
    assert overloaded is not None and "26.1x its p50 at light load" in overloaded
    stalled = noop_unsteady({"p50_ms": 0.361}, {"p50_ms": 0.197, "p99_ms": 1.6})
    assert stalled is not None and "host stalls" in stalled and "8.1x" in stalled
    # the judged (chunk-median) p99 is the one compared, where there is one
    light = {"p50_ms": 0.2, "p99_ms": 9.0, "p99_chunk_median_ms": 0.8}
    assert noop_unsteady({"p50_ms": 0.3}, light) is None


def test_one_stalled_chunk_does_not_set_the_judged_p99() -> None:
    from bench.score_load import chunk_p99s
    from bench.score_verdict import judged_p99

    # two repeats of four chunks; one chunk met a 19 ms host stall
    reps = [
        {"open_70": {"chunk_p99_ms": [1.2, 1.4, 19.0, 1.3]}},
        {"open_70": {"chunk_p99_ms": [1.5, 1.1, 1.6, 1.2]}},
    ]
    figures = chunk_p99s(reps)
    assert figures == {
        "p99_chunk_median_ms": 1.35,
        "p99_chunk_range_ms": [1.1, 19.0],
        "chunk_count": 8,
    }
    assert judged_p99({"p99_ms": 18.0, **figures}) == 1.35
    assert judged_p99({"p99_ms": 18.0}) == 18.0  # results from before chunk p99s existed


def test_max_throughput_counts_full_quality_answers_only() -> None:
    from bench.score_load import goodput

    pitstore = {"requests": 100, "seconds": 2.0, "fallbacks": {"False": 80, "redis_timeout": 20}}
    assert goodput(pitstore) == 40.0  # fallback answers are not capacity
    assert goodput({"requests": 100, "seconds": 2.0}) == 50.0  # the no-op answers nothing else


def test_stage_quantiles_take_the_light_chunks_only_and_bound_from_above() -> None:
    from bench.score_load import add_delta, stage_quantiles

    def histo(counts: list[float], total: float) -> dict[str, dict[str, float]]:
        bounds = ["0.0001", "0.001", "0.01", "+Inf"]
        cumulative = [sum(counts[: i + 1]) for i in range(len(counts))]
        h = {f"le={b}": c for b, c in zip(bounds, cumulative, strict=True)}
        return {"audit_flush": {**h, "sum": total, "count": cumulative[-1]}}

    before = histo([500, 400, 0, 0], 0.2)  # a saturated closed loop, before the chunk
    after = histo([500, 400 + 95, 4, 1], 0.2 + 0.1)  # the chunk: 95 fast, 4 slower, 1 slowest
    light: dict[str, dict[str, float]] = {}
    add_delta(light, before, after)
    q = stage_quantiles(light)["audit_flush"]
    assert q["count"] == 100 and q["mean_ms"] == 1.0
    assert q["p50_at_most_ms"] == 1.0  # under the 1 ms bound, not 0.1: the chunk alone counts
    assert q["p99_at_most_ms"] == 10.0
    assert stage_quantiles(histo([0, 0, 0, 5], 1.0))["audit_flush"]["p99_at_most_ms"] is None


def test_the_durable_no_op_logs_each_request_before_it_answers(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from bench import noop_app
    from pitstore.serving.audit import AuditLog, count_records

    noop_app.DURABLE.append(AuditLog(tmp_path))
    try:
        with TestClient(noop_app.app) as http:
            for i in range(3):
                answer = http.post("/v1/score", json={"transaction_id": f"t{i}"}).json()
                assert answer["transaction_id"] == f"t{i}"
                assert count_records(tmp_path) == i + 1  # durable before the answer
    finally:
        noop_app.DURABLE.pop().close()
