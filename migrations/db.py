"""Database side: connecting, the runner lock and the schema_version history table.

Why the engine (not 001) creates schema_version: the engine must write a migration's row in
the same transaction as the migration itself, including 001's, so the table has to exist
before 001 runs; and databases set up by the runbook's psql loop already have an older
schema_version (version, description, applied_at) that the engine adopts by adding the
columns it lacks, then ``baseline``.
"""

from __future__ import annotations

import getpass
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

# pg_try_advisory_lock key: "hft_mig" as a 64-bit integer; one lock per database.
LOCK_KEY = 0x6866745F6D6967
APPLICATION_NAME = "hft-migrations"

CREATE_HISTORY = """
CREATE TABLE IF NOT EXISTS schema_version (
    version      INTEGER     PRIMARY KEY,
    description  TEXT        NOT NULL,
    checksum     TEXT,
    applied_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    applied_by   TEXT,
    execution_ms INTEGER
);
ALTER TABLE schema_version ADD COLUMN IF NOT EXISTS checksum TEXT;
ALTER TABLE schema_version ADD COLUMN IF NOT EXISTS applied_by TEXT;
ALTER TABLE schema_version ADD COLUMN IF NOT EXISTS execution_ms INTEGER;
COMMENT ON TABLE schema_version IS
    'Applied migrations; written only by the hft-deploy migration engine (python -m migrations)';
"""


class ConnectError(Exception):
    """Could not connect; the message never contains the password."""


class LockTimeout(Exception):
    """Another runner kept the migration lock longer than the allowed wait."""


@dataclass(frozen=True)
class AppliedRow:
    """One row of schema_version."""

    version: int
    description: str
    checksum: str | None
    applied_at: datetime
    applied_by: str | None
    execution_ms: int | None


def connect(dsn: str | None, notice: Callable[[str], None] | None = None) -> psycopg.Connection:
    """Open an autocommit connection from a conninfo string or libpq's PG* environment.

    Autocommit on purpose: an idle session must never sit inside a transaction, because
    CREATE INDEX CONCURRENTLY (ours or another runner's) waits for every open transaction.
    Transactions are opened explicitly around each migration.
    """
    try:
        conn = psycopg.connect(dsn or "", autocommit=True, application_name=APPLICATION_NAME)
    except psycopg.Error as exc:
        password = conninfo_to_dict(dsn or "").get("password")
        raise ConnectError(redact(f"cannot connect: {exc}".strip(), password)) from None
    if notice is not None:
        conn.add_notice_handler(lambda d: notice(d.message_primary or ""))
    return conn


def redact(text: str, password: str | None) -> str:
    """Remove a password from text we are about to print (defence in depth)."""
    return text.replace(password, "***") if password else text


def describe(conn: psycopg.Connection) -> str:
    """``user@host:port/dbname`` for messages; never includes the password."""
    p = conn.info.get_parameters()
    return f"{p.get('user', '?')}@{p.get('host', 'local')}:{p.get('port', '5432')}/{p.get('dbname', '?')}"


def applied_by(conn: psycopg.Connection) -> str:
    """Who applies: the database role plus the OS user and host the engine runs on."""
    try:
        os_user = getpass.getuser()
    except (KeyError, OSError):
        os_user = "?"
    return f"{conn.info.get_parameters().get('user', '?')} ({os_user}@{socket.gethostname()})"


def acquire_lock(conn: psycopg.Connection, timeout: float,
                 on_wait: Callable[[str], None] | None = None) -> float:
    """Take the session-level advisory lock, polling with pg_try_advisory_lock.

    Why polling: a session blocked inside pg_advisory_lock has an open transaction, and
    another runner's CREATE INDEX CONCURRENTLY waits for it while it waits for that runner:
    a deadlock (reported for golang-migrate and Flyway). Polling keeps every wait outside a
    transaction. Returns seconds waited; raises LockTimeout after ``timeout`` seconds.
    """
    start = time.monotonic()
    delay, told = 0.05, False
    while True:
        got = conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()
        if got and got[0]:
            return time.monotonic() - start
        holder = lock_holder(conn)
        waited = time.monotonic() - start
        if waited >= timeout:
            raise LockTimeout(f"another migration runner holds the lock ({holder}); "
                              f"gave up after {waited:.1f}s (--lock-timeout {timeout:g})")
        if on_wait is not None and not told:
            on_wait(f"waiting up to {timeout:g}s for the migration lock held by {holder}")
            told = True
        time.sleep(min(delay, max(0.0, timeout - waited)))
        delay = min(delay * 2, 0.5)


def lock_holder(conn: psycopg.Connection) -> str:
    """Who holds our advisory lock, for the waiting runner's message."""
    row = conn.execute(
        """SELECT a.pid, a.usename, a.application_name, a.client_addr::text, a.backend_start
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
            WHERE l.locktype = 'advisory' AND l.granted AND l.database = (
                  SELECT oid FROM pg_database WHERE datname = current_database())
              AND l.classid = %s AND l.objid = %s AND l.objsubid = 1""",
        ((LOCK_KEY >> 32) & 0xFFFFFFFF, LOCK_KEY & 0xFFFFFFFF)).fetchone()
    if not row:
        return "a session that just released it"
    pid, user, app, addr, since = row
    return f"pid {pid}, user {user}, application '{app}', client {addr or 'local'}, since {since:%H:%M:%S}"


def release_lock(conn: psycopg.Connection) -> None:
    if not conn.closed:
        conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))


def history_exists(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    return bool(row and row[0])


def ensure_history(conn: psycopg.Connection) -> None:
    """Create or adopt schema_version; only called while holding the lock."""
    with conn.transaction():
        conn.execute(CREATE_HISTORY)


def read_history(conn: psycopg.Connection) -> list[AppliedRow]:
    if not history_exists(conn):
        return []
    cols = {r[0] for r in conn.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_name = 'schema_version' AND table_schema = current_schema()")}
    fields = [sql.Identifier(c) if c in cols else sql.SQL("NULL") for c in
              ("version", "description", "checksum", "applied_at", "applied_by", "execution_ms")]
    query = sql.SQL("SELECT {} FROM schema_version ORDER BY version").format(sql.SQL(", ").join(fields))
    return [AppliedRow(*r) for r in conn.execute(query)]


def insert_history(conn: psycopg.Connection, version: int, description: str,
                   checksum: str | None, execution_ms: int | None) -> None:
    conn.execute(
        "INSERT INTO schema_version (version, description, checksum, applied_by, execution_ms) "
        "VALUES (%s, %s, %s, %s, %s)",
        (version, description, checksum, applied_by(conn), execution_ms))


def delete_history(conn: psycopg.Connection, version: int) -> None:
    conn.execute("DELETE FROM schema_version WHERE version = %s", (version,))


def invalid_index(conn: psycopg.Connection, name: str) -> str | None:
    """Qualified name of index ``name`` if it exists and is INVALID (failed concurrent build)."""
    row = conn.execute(
        "SELECT c.oid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE c.oid = to_regclass(%s) AND NOT i.indisvalid", (name,)).fetchone()
    return row[0] if row else None


def drop_index_concurrently(conn: psycopg.Connection, qualified: str) -> None:
    conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.SQL(qualified)))
