"""PostgreSQL as an audit table: the event columns, the snapshot as JSONB, three indexes.

``synchronous_commit=on`` and ``fsync=on`` (the defaults, stated on the
command line so that no configuration file can change them): a commit returns
after its WAL is flushed. A fresh cluster per run (``initdb``), as the
``postgres`` user when the harness runs as root, since PostgreSQL refuses root.

Positions are an identity column (the primary key), so replay in commit order
reads the primary key in order; ids have no unique index (no idempotent append,
which LeadTrail has: less work for PostgreSQL). The live feed is LISTEN/NOTIFY
from an AFTER INSERT trigger sending the row as JSON; the trigger is created
only for the live measurement, so the ingest figures do not pay for it.
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from leadtrail.server.simulation import SimulatedEvent

from benchmarks.systems import (
    ChildProcess,
    Received,
    RunAs,
    Session,
    System,
    Unavailable,
    command_output,
    find_binary,
    free_port,
    require_client,
)

SCHEMA = """
CREATE TABLE events (
    position      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id            text NOT NULL,
    type          text NOT NULL,
    ts            timestamptz NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    lead_id       text NOT NULL,
    flow_id       text NOT NULL,
    entity_id     text NOT NULL,
    outcome       smallint NOT NULL,
    reason        text NOT NULL,
    duration_ms   integer NOT NULL,
    integration   text NOT NULL,
    response_code integer NOT NULL,
    price         numeric,
    details       jsonb NOT NULL,
    lead          jsonb NOT NULL
);
CREATE INDEX events_lead ON events (lead_id, ts);
CREATE INDEX events_type ON events (type, ts);
CREATE INDEX events_flow ON events (flow_id, ts);
"""
LIVE_TRIGGER = """
CREATE FUNCTION notify_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('events', row_to_json(NEW)::text);
    RETURN NULL;
END $$;
CREATE TRIGGER events_notify AFTER INSERT ON events FOR EACH ROW EXECUTE FUNCTION notify_event();
"""
COLUMNS = (
    "id, type, ts, lead_id, flow_id, entity_id, outcome, reason, duration_ms, integration, "
    "response_code, price, details, lead"
)
INSERT = f"INSERT INTO events ({COLUMNS}) VALUES ({', '.join(['%s'] * 14)})"
TIMELINE = f"SELECT position, recorded_at, {COLUMNS} FROM events WHERE lead_id = %s ORDER BY ts, position"
SCAN = (
    f"SELECT position, recorded_at, {COLUMNS} FROM events "
    "WHERE type = %s AND ts >= %s AND ts < %s ORDER BY ts, position"
)
REPLAY = f"SELECT position, recorded_at, {COLUMNS} FROM events ORDER BY position"


def _bin_dirs() -> list[str]:
    # Debian keeps the server binaries out of PATH, one folder per major version.
    return sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]), reverse=True)


def _run_as() -> RunAs | None:
    if os.geteuid() != 0:
        return None
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        raise Unavailable(
            "running as root and there is no `postgres` user to run PostgreSQL as "
            "(bash benchmarks/install_peers.sh creates it)"
        ) from None
    return RunAs(user.pw_uid, user.pw_gid, "postgres")


def utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


class PostgresSession(Session):
    def __init__(self, connection: Any) -> None:
        self.connection = connection

    async def append(self, events: Sequence[Any]) -> None:
        from psycopg.types.json import Jsonb

        rows = [(*e[:12], Jsonb(e[12]), Jsonb(e[13])) for e in events]
        if len(rows) == 1:  # autocommit: one statement, one commit
            await self.connection.execute(INSERT, rows[0])
            return
        async with self.connection.transaction(), self.connection.cursor() as cursor:
            await cursor.executemany(INSERT, rows)

    async def timeline(self, lead_id: str) -> int:
        cursor = await self.connection.execute(TIMELINE, (lead_id,))
        return len(await cursor.fetchall())

    async def scan(self, event_type: str, start_ms: int, end_ms: int) -> int:
        cursor = await self.connection.execute(SCAN, (event_type, utc(start_ms), utc(end_ms)))
        return len(await cursor.fetchall())

    async def close(self) -> None:
        await self.connection.close()


class PostgreSQL(System):
    key = "postgres"
    label = "PostgreSQL"

    def __init__(self) -> None:
        super().__init__()
        self.server: ChildProcess | None = None
        self.conninfo = ""

    @property
    def setting(self) -> str:
        return "synchronous_commit=on"

    def check(self) -> None:
        require_client("psycopg", "psycopg")
        find_binary("initdb", *_bin_dirs())
        find_binary("postgres", *_bin_dirs())
        _run_as()

    async def start(self, directory: str) -> None:
        import psycopg
        from psycopg.types.json import set_json_dumps, set_json_loads

        # The fastest JSON the client has, so that the client's CPU is not what is measured.
        set_json_dumps(orjson.dumps)
        set_json_loads(orjson.loads)
        run_as = _run_as()
        initdb, postgres = find_binary("initdb", *_bin_dirs()), find_binary("postgres", *_bin_dirs())
        self.directory = os.path.join(directory, "data")
        if run_as is not None:
            os.chown(directory, run_as.uid, run_as.gid)
        # --no-sync: the cluster's creation is not measured; every commit after it is fsynced.
        result = subprocess.run(
            [initdb, "-D", self.directory, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C",
             "--no-sync"],
            capture_output=True,
            text=True,
            user=run_as.uid if run_as else None,
            group=run_as.gid if run_as else None,
            extra_groups=[] if run_as else None,
            cwd=directory,
            timeout=120,
        )  # fmt: skip
        if result.returncode != 0:
            raise Unavailable(f"initdb failed: {(result.stdout + result.stderr)[-1000:]}")
        port = free_port()
        argv = [postgres, "-D", self.directory, "-p", str(port), "-c", "listen_addresses=127.0.0.1",
                "-c", f"unix_socket_directories={directory}",
                "-c", "synchronous_commit=on", "-c", "fsync=on"]  # fmt: skip
        # SIGINT is PostgreSQL's fast shutdown: sessions end, a checkpoint is written.
        self.server = ChildProcess("postgres", argv, os.path.join(directory, "server.log"),
                                   stop_signal=2, run_as=run_as)  # fmt: skip
        self.conninfo = f"host=127.0.0.1 port={port} user=postgres dbname=postgres"

        async def probe() -> None:
            connection = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
            await connection.close()

        await self.server.wait_until(probe)
        async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as connection:
            await connection.execute(SCHEMA)
            row = await (await connection.execute("SHOW server_version")).fetchone()
            self.version = str(row[0]) if row else ""

    async def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def prepare(self, events: Sequence[SimulatedEvent]) -> list[Any]:
        return [
            (d["id"], d["type"], utc(d["timestamp_ms"]), d["lead_id"], d["flow_id"], d["entity_id"],
             d["outcome"], d["reason"], d["duration_ms"], d["integration"], d["response_code"],
             Decimal(d["price"]) if d["price"] else None, d["details"], d["lead"])
            for d in events
        ]  # fmt: skip

    async def _connect(self, autocommit: bool = True) -> Any:
        import psycopg

        return await psycopg.AsyncConnection.connect(self.conninfo, autocommit=autocommit)

    async def session(self) -> Session:
        return PostgresSession(await self._connect())

    async def replay(self) -> int:
        count = 0
        connection = await self._connect(autocommit=False)
        try:
            # A server-side cursor: rows arrive 1,000 at a time, not all at once in memory.
            async with connection.cursor(name="replay") as cursor:
                cursor.itersize = 1000
                await cursor.execute(REPLAY)
                async for _ in cursor:
                    count += 1
            await connection.commit()
        finally:
            await connection.close()
        return count

    async def follow(self, received: Received, ready: asyncio.Event) -> None:
        connection = await self._connect()
        try:
            await connection.execute(LIVE_TRIGGER)
            await connection.execute("LISTEN events")
            ready.set()
            async for notification in connection.notifies():
                received(orjson.loads(notification.payload)["id"])
        finally:
            await connection.close()

    async def stored(self) -> int:
        connection = await self._connect()
        try:
            row = await (await connection.execute("SELECT count(*) FROM events")).fetchone()
            return int(row[0]) if row else 0
        finally:
            await connection.close()

    async def settle(self) -> None:
        # Committed rows are in the WAL; a checkpoint writes the table and index pages too.
        connection = await self._connect()
        try:
            await connection.execute("CHECKPOINT")
        finally:
            await connection.close()

    def notes(self) -> list[str]:
        version = command_output([find_binary("postgres", *_bin_dirs()), "--version"])
        return [
            f"PostgreSQL ({version}): a fresh cluster per run; synchronous_commit=on, fsync=on; one "
            "connection per client (psycopg 3, async); single events in autocommit, batches as one "
            "transaction (`executemany`, pipelined). Indexes (lead_id, ts), (type, ts), (flow_id, ts) and "
            "the identity primary key; no unique index on the event id (no idempotent append). Replay "
            "reads the primary key in order through a server-side cursor. Live: LISTEN/NOTIFY from an "
            "AFTER INSERT trigger, created only for the live measurement. Bytes on disk are the growth of "
            "the whole data directory (tables, indexes, WAL) after a CHECKPOINT; WAL grows in 16 MB "
            "segments, which a small data set rounds up.",
        ]
