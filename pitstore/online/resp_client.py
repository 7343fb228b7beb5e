"""A lean asyncio Redis client for the scoring hot path: one pipelined round trip.

Why not ``redis.asyncio``: for a request's two HMGETs its pipeline object, retry
wrapper, command packing and response parsing cost ~0.25 ms of event-loop CPU
per request (profiled), more than the model's explanation. Here the caller
hands over the request already encoded as RESP (``OnlineReader.encode_hmgets``)
and hiredis parses the replies; a connection is taken from a free list, used by
one request at a time, and put back only after a complete, clean exchange.
docs/decisions/0002-resp-client.md has the measurement against redis.asyncio.

Failure semantics match what ``ScoringService`` relies on:

* errors surface as ``redis.exceptions.ConnectionError`` / ``TimeoutError`` /
  ``ResponseError``, so callers classify them as with redis-py;
* a connection that fails, or whose exchange is cancelled (the caller's
  deadline), is closed, never reused: it may still carry a late reply;
* a failure on a *reused* connection is retried once on a fresh one (HMGET is
  idempotent): that heals connections a Redis restart broke, so scoring
  resumes by itself when Redis is back.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import hiredis
import redis.exceptions
from redis.connection import parse_url

from pitstore.online.reader import resp_command

_READ_CHUNK = 1 << 16


class _Conn:
    __slots__ = ("parser", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.parser = hiredis.Reader()

    async def exchange(self, payload: bytes, n_replies: int) -> list[Any]:
        self.writer.write(payload)
        replies: list[Any] = []
        while len(replies) < n_replies:
            reply = self.parser.gets()
            if reply is False:  # needs more bytes
                data = await self.reader.read(_READ_CHUNK)
                if not data:
                    raise redis.exceptions.ConnectionError("Redis closed the connection")
                self.parser.feed(data)
                continue
            replies.append(reply)
        return replies

    def close(self) -> None:
        self.writer.close()


class RespPool:
    """Connections to one Redis server (``redis://``, ``rediss://`` or ``unix://``)."""

    def __init__(self, url: str, connect_timeout_s: float, max_idle: int = 64) -> None:
        opts = parse_url(url)
        self._host: str | None = opts.get("host", "localhost" if "path" not in opts else None)
        self._port = int(opts.get("port", 6379))
        self._path: str | None = opts.get("path")
        self._ssl = "SSL" in getattr(opts.get("connection_class"), "__name__", "")
        self._hello = b""  # AUTH / SELECT, sent once per new connection
        self._hello_n = 0
        password, username = opts.get("password"), opts.get("username")
        if password:
            auth = [username.encode()] if username else []
            self._hello += resp_command(b"AUTH", *auth, str(password).encode())
            self._hello_n += 1
        if int(opts.get("db", 0)):
            self._hello += resp_command(b"SELECT", str(opts["db"]).encode())
            self._hello_n += 1
        self.connect_timeout_s = connect_timeout_s
        self.max_idle = max_idle
        self._idle: list[_Conn] = []

    async def _connect(self) -> _Conn:
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                if self._path is not None:
                    reader, writer = await asyncio.open_unix_connection(self._path)
                else:
                    ctx = ssl.create_default_context() if self._ssl else None
                    reader, writer = await asyncio.open_connection(self._host, self._port, ssl=ctx)
                conn = _Conn(reader, writer)
                if self._hello:
                    for reply in await conn.exchange(self._hello, self._hello_n):
                        if isinstance(reply, hiredis.ReplyError):
                            conn.close()
                            raise redis.exceptions.ConnectionError(f"Redis refused: {reply}")
                return conn
        except TimeoutError as exc:
            raise redis.exceptions.TimeoutError("timed out connecting to Redis") from exc
        except OSError as exc:
            raise redis.exceptions.ConnectionError(f"cannot connect to Redis: {exc}") from exc

    async def execute(self, payload: bytes, n_replies: int) -> list[Any]:
        """Send ``payload`` (``n_replies`` commands) and return the replies in order."""
        reused = bool(self._idle)
        conn = self._idle.pop() if reused else await self._connect()
        try:
            replies = await conn.exchange(payload, n_replies)
        except (OSError, redis.exceptions.ConnectionError, hiredis.ProtocolError) as exc:
            conn.close()
            if not reused:
                raise redis.exceptions.ConnectionError(f"Redis read failed: {exc}") from exc
            return await self.execute_fresh(payload, n_replies)
        except BaseException:  # cancelled (a deadline) or anything else: never reuse
            conn.close()
            raise
        if len(self._idle) < self.max_idle:
            self._idle.append(conn)
        else:
            conn.close()
        for reply in replies:
            if isinstance(reply, hiredis.ReplyError):
                raise redis.exceptions.ResponseError(str(reply))
        return replies

    async def execute_fresh(self, payload: bytes, n_replies: int) -> list[Any]:
        """``execute`` on a new connection (the retry after a stale pooled one)."""
        for conn in self._idle:  # the others predate the same outage: drop them too
            conn.close()
        self._idle.clear()
        return await self.execute(payload, n_replies)

    async def ping(self) -> bool:
        return bool(await self.execute(resp_command(b"PING"), 1) == [b"PONG"])

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
