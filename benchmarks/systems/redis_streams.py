"""Redis Streams as an event store: one global stream, one sorted set per lead.

An event is one ``XADD`` to the stream ``events`` (its fields, snapshot and
details as JSON) plus a ``ZADD`` of the entry id to ``lead:<lead_id>`` scored
by the event's timestamp, both in one Lua script so that they are atomic and
cost one round trip; a batch is a MULTI/EXEC of such scripts. The append-only
file is on: ``appendfsync always`` (fsync before any reply) is the durable
setting and ``everysec`` (up to a second of acknowledged writes lost on a
crash of the machine) is reported as a separate row, for its writes.

The schema has no index by type or time, so a type + window scan reads the
whole stream and filters in the client: that is what this schema costs, and
the report says so.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Any

import orjson
from leadtrail.server.simulation import SimulatedEvent

from benchmarks.systems import (
    INGEST_BATCH,
    INGEST_SINGLE_1,
    INGEST_SINGLE_16,
    LIVE,
    ChildProcess,
    Received,
    Session,
    System,
    command_output,
    find_binary,
    free_port,
    require_client,
)

STREAM = "events"
APPEND_SCRIPT = """
local entry = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
redis.call('ZADD', KEYS[2], ARGV[1], entry)
return entry
"""
PAGE = 1000


def _fields(entry_fields: Any) -> dict[bytes, bytes]:
    # redis-py answers XRANGE entries as (id, {field: value}) with bytes throughout.
    return entry_fields if isinstance(entry_fields, dict) else dict(entry_fields)


class RedisSession(Session):
    def __init__(self, client: Any, script_sha: str) -> None:
        self.client = client
        self.sha = script_sha

    async def append(self, events: Sequence[Any]) -> None:
        if len(events) == 1:
            lead_key, ts, fields = events[0]
            await self.client.evalsha(self.sha, 2, STREAM, lead_key, ts, *_encoded(fields))
            return
        async with self.client.pipeline(transaction=True) as pipe:
            for lead_key, ts, fields in events:
                pipe.evalsha(self.sha, 2, STREAM, lead_key, ts, *_encoded(fields))
            await pipe.execute()

    async def timeline(self, lead_id: str) -> int:
        entries = await self.client.zrange(f"lead:{lead_id}", 0, -1)
        async with self.client.pipeline(transaction=False) as pipe:
            for entry in entries:
                pipe.xrange(STREAM, entry, entry)
            found = await pipe.execute()
        # The client gets whole events: each snapshot decoded, as the other systems' clients get them.
        events = [orjson.loads(_fields(fields)[b"lead"]) for entries in found for _, fields in entries]
        return len(events)

    async def scan(self, event_type: str, start_ms: int, end_ms: int) -> int:
        wanted = event_type.encode()
        count = 0
        async for fields in _read_stream(self.client):
            if fields[b"type"] == wanted and start_ms <= int(fields[b"ts"]) < end_ms:
                orjson.loads(fields[b"lead"])  # with its snapshot, as the other systems' scans
                count += 1
        return count

    async def close(self) -> None:
        await self.client.aclose()


def _encoded(fields: dict[str, Any]) -> list[Any]:
    flat: list[Any] = []
    for name, value in fields.items():
        flat.append(name)
        flat.append(orjson.dumps(value) if isinstance(value, dict) else value)
    return flat


async def _read_stream(client: Any) -> Any:
    """Every entry's fields, in stream (commit) order, a page at a time."""
    start = "-"
    while True:
        page = await client.xrange(STREAM, start, "+", count=PAGE)
        for _, fields in page:
            yield _fields(fields)
        if len(page) < PAGE:
            return
        start = b"(" + page[-1][0]


class RedisStreams(System):
    key = "redis"
    label = "Redis Streams"
    appendfsync = "always"

    def __init__(self) -> None:
        super().__init__()
        self.server: ChildProcess | None = None
        self.port = 0
        self.sha = ""

    @property
    def setting(self) -> str:
        return f"appendfsync {self.appendfsync}"

    @property
    def name(self) -> str:
        return f"redis-{self.appendfsync}"

    def check(self) -> None:
        require_client("redis.asyncio", "redis")
        find_binary("redis-server")

    def _client(self) -> Any:
        import redis.asyncio

        return redis.asyncio.Redis(host="127.0.0.1", port=self.port, decode_responses=False)

    async def start(self, directory: str) -> None:
        self.directory = os.path.join(directory, "data")
        os.makedirs(self.directory)
        self.port = free_port()
        argv = [find_binary("redis-server"), "--bind", "127.0.0.1", "--port", str(self.port),
                "--dir", self.directory, "--appendonly", "yes", "--appendfsync", self.appendfsync,
                "--save", "", "--daemonize", "no", "--logfile", ""]  # fmt: skip
        self.server = ChildProcess("redis-server", argv, os.path.join(directory, "server.log"))
        client = self._client()
        try:
            await self.server.wait_until(client.ping)
            self.sha = await client.script_load(APPEND_SCRIPT)
            self.version = (await client.info("server"))["redis_version"]
        finally:
            await client.aclose()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def prepare(self, events: Sequence[SimulatedEvent]) -> list[Any]:
        prepared = []
        for d in events:
            fields = {name: value for name, value in d.items() if name != "timestamp_ms"}
            fields["ts"] = d["timestamp_ms"]
            prepared.append((f"lead:{d['lead_id']}", d["timestamp_ms"], fields))
        return prepared

    async def session(self) -> Session:
        return RedisSession(self._client(), self.sha)

    async def replay(self) -> int:
        client = self._client()
        try:
            count = 0
            async for fields in _read_stream(client):
                orjson.loads(fields[b"lead"])  # a replay hands the client whole events
                count += 1
            return count
        finally:
            await client.aclose()

    async def follow(self, received: Received, ready: asyncio.Event) -> None:
        client = self._client()
        try:
            # From the last entry there is now: nothing added after this point is missed,
            # whatever happens between one XREAD and the next.
            last = await client.xrevrange(STREAM, "+", "-", count=1)
            after = last[0][0] if last else b"0-0"
            ready.set()
            while True:
                answer = await client.xread({STREAM: after}, block=0, count=PAGE)
                for _, entries in answer:
                    for entry_id, fields in entries:
                        received(_fields(fields)[b"id"].decode())
                        after = entry_id
        finally:
            await client.aclose()

    async def stored(self) -> int:
        client = self._client()
        try:
            return int(await client.xlen(STREAM))
        finally:
            await client.aclose()

    def notes(self) -> list[str]:
        if self.appendfsync != "always":
            return [
                f"Redis, appendfsync {self.appendfsync}: writes only (ingest and live); acknowledged writes "
                "of up to the last second can be lost if the machine fails, so it is not a durable peer. "
                "Its reads are those of appendfsync always.",
            ]
        version = command_output([find_binary("redis-server"), "--version"])
        return [
            f"Redis ({version}): a fresh server per run, AOF on (`appendfsync always`: fsync before "
            "replying); an event is XADD to one global stream + ZADD of its entry id to a per-lead sorted "
            "set scored by timestamp, atomically in one Lua script; batches are MULTI/EXEC of 100 scripts. "
            "A timeline is ZRANGE then a pipeline of XRANGE. The schema has no type or time index: a type "
            "+ window scan reads the whole stream and filters in the client. Replay: XRANGE pages of "
            '1,000. Live: XREAD BLOCK. RDB snapshots are off (`save ""`).',
        ]


class RedisStreamsEverysec(RedisStreams):
    appendfsync = "everysec"
    measures = frozenset({INGEST_SINGLE_1, INGEST_SINGLE_16, INGEST_BATCH, LIVE})
