"""Backups with pg_dump -Fc and restores with pg_restore (runbook 4.1, 5.2).

Why the password never reaches argv: anything on a command line is visible to every user
through ``ps`` and /proc. The child gets the connection through PG* environment variables
and the password through a temporary 0600 passfile (PGPASSFILE), which is removed after.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import psycopg

DEFAULT_BACKUP_DIR = Path("/var/backup")
PG_LIB = Path("/usr/lib/postgresql")


class BackupError(Exception):
    """pg_dump or pg_restore failed or could not be found."""


def find_tool(name: str, server_major: int, bin_dir: Path | None = None) -> str:
    """pg_dump/pg_restore no older than the server (older clients refuse newer servers)."""
    if bin_dir is not None:
        return str(bin_dir / name)
    candidates = []
    if PG_LIB.is_dir():
        for d in PG_LIB.iterdir():
            if d.name.isdigit() and (d / "bin" / name).exists() and int(d.name) >= server_major:
                candidates.append((int(d.name), d / "bin" / name))
    if candidates:
        return str(min(candidates)[1])
    found = shutil.which(name)
    if not found:
        raise BackupError(f"{name} not found (Debian package postgresql-client-{server_major} "
                          f"or newer)")
    return found


def child_env(conn: psycopg.Connection, passfile: Path | None) -> tuple[dict[str, str], str]:
    """Environment for a libpq child process equivalent to ``conn``, and its dbname.

    Host, port, user and database go in PG* variables; the password only into ``passfile``.
    """
    p = conn.info.get_parameters()
    env = {k: v for k, v in os.environ.items() if k not in ("PGPASSWORD", "PGSERVICE")}
    for key, var in (("host", "PGHOST"), ("port", "PGPORT"), ("user", "PGUSER"),
                     ("dbname", "PGDATABASE"), ("sslmode", "PGSSLMODE")):
        if p.get(key):
            env[var] = p[key]
    if passfile is not None:
        env["PGPASSFILE"] = str(passfile)
    return env, p.get("dbname", "postgres")


@contextmanager
def password_file(password: str | None) -> Iterator[Path | None]:
    """A 0600 libpq passfile holding ``password`` for any host/db/user, removed on exit."""
    if not password:
        yield None
        return
    fd, name = tempfile.mkstemp(prefix="hft-mig-", suffix=".pgpass")
    try:
        escaped = password.replace("\\", "\\\\").replace(":", "\\:")
        os.write(fd, f"*:*:*:*:{escaped}\n".encode())
        os.close(fd)
        os.chmod(name, 0o600)
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def backup_name(dbname: str, when: datetime | None = None) -> str:
    """``<dbname>_YYYYMMDD_HHMMSS.dump`` in UTC, as in runbook 5.2 (hft_db_20251125_100000)."""
    when = when or datetime.now(timezone.utc)
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", dbname)
    return f"{safe}_{when:%Y%m%d_%H%M%S}.dump"


def dump_command(tool: str, target: Path) -> list[str]:
    """argv for pg_dump: no connection options at all, they travel in the environment."""
    return [tool, "--format=custom", "--no-password", f"--file={target}"]


def restore_command(tool: str, source: Path, dbname: str) -> list[str]:
    """argv for pg_restore: replace objects, all or nothing, stop at the first error."""
    return [tool, "--clean", "--if-exists", "--single-transaction", "--exit-on-error",
            "--no-owner", "--no-password", f"--dbname={dbname}", str(source)]


def backup(conn: psycopg.Connection, directory: Path, bin_dir: Path | None = None) -> Path:
    """Dump the connected database to ``directory``; returns the file (0600)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    tool = find_tool("pg_dump", conn.info.server_version // 10000, bin_dir)
    with password_file(conn.info.password) as pf:
        env, dbname = child_env(conn, pf)
        target = directory / backup_name(dbname)
        n = 1
        while target.exists():
            target = directory / backup_name(dbname).replace(".dump", f"_{n}.dump")
            n += 1
        partial = target.with_suffix(".dump.partial")
        try:
            _run(dump_command(tool, partial), env, conn.info.password)
        except BackupError:
            partial.unlink(missing_ok=True)
            raise
    os.chmod(partial, 0o600)
    partial.rename(target)
    return target


def restore(conn: psycopg.Connection, source: Path, bin_dir: Path | None = None) -> None:
    """Restore a pg_dump -Fc file into the connected database, in one transaction."""
    if not source.is_file():
        raise BackupError(f"backup file {source} does not exist")
    tool = find_tool("pg_restore", conn.info.server_version // 10000, bin_dir)
    with password_file(conn.info.password) as pf:
        env, dbname = child_env(conn, pf)
        # dbname passed as an option value is safe: it carries no secret.
        _run(restore_command(tool, source, dbname), env, conn.info.password)


def _run(argv: list[str], env: dict[str, str], password: str | None) -> None:
    if password and any(password in a for a in argv):
        raise BackupError("refusing to run: the password would appear on a command line")
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        err = proc.stderr.strip()
        if password:
            err = err.replace(password, "***")
        raise BackupError(f"{Path(argv[0]).name} failed ({proc.returncode}): {err}")


# ---- what a dump holds, the backups a directory holds, retention (runbook 5.2) ----------

# The names ``backup`` writes: <db>_YYYYMMDD_HHMMSS[_N].dump. Listing and pruning look at these
# only: no other file in the directory is ever reported or deleted.
BACKUP_RE = re.compile(r"^(?P<db>[A-Za-z0-9_.-]+?)_(?P<ts>\d{8}_\d{6})(?:_\d+)?\.dump$")


def newest_tool(name: str) -> str:
    """The newest installed pg_restore (reading a dump needs a client at least as new as it)."""
    found = sorted((int(d.name), d / "bin" / name) for d in PG_LIB.iterdir()
                   if d.name.isdigit() and (d / "bin" / name).exists()) if PG_LIB.is_dir() else []
    return str(found[-1][1]) if found else find_tool(name, 0)


def dump_schema_versions(source: Path, bin_dir: Path | None = None) -> list[int]:
    """The versions in the dump's schema_version table (empty: no such table, version 0).

    Reads the dump with ``pg_restore --data-only --table=schema_version --file=-`` (no
    database connection): the COPY block of that table, its ``version`` column.
    """
    if not source.is_file():
        raise BackupError(f"backup file {source} does not exist")
    tool = str(bin_dir / "pg_restore") if bin_dir else newest_tool("pg_restore")
    # no connection is made: the child gets no PG* variable (no password) at all
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    proc = subprocess.run([tool, "--data-only", "--table=schema_version", "--file=-", str(source)],
                          env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BackupError(f"pg_restore cannot read {source} ({proc.returncode}): {proc.stderr.strip()}")
    versions: list[int] = []
    column = None
    for line in proc.stdout.splitlines():
        m = re.match(r"^COPY \S*schema_version \((?P<cols>[^)]*)\) FROM stdin;$", line)
        if m:
            column = [c.strip().strip('"') for c in m.group("cols").split(",")].index("version")
            continue
        if column is not None:
            if line == "\\.":
                break
            versions.append(int(line.split("\t")[column]))
    return sorted(versions)


def list_backups(directory: Path, now: datetime | None = None) -> list[dict]:
    """The backups in ``directory`` (the names ``backup`` writes), newest first: file, bytes,
    created (UTC, from the name), age in seconds."""
    now = now or datetime.now(timezone.utc)
    out = []
    if not directory.is_dir():
        return out
    for path in directory.iterdir():
        m = BACKUP_RE.match(path.name)
        if not m or not path.is_file() or path.is_symlink():
            continue
        created = datetime.strptime(m.group("ts"), "%Y%m%d_%H%M%S").replace(tzinfo=timezone.utc)
        out.append({"file": path.name, "path": str(path), "bytes": path.stat().st_size,
                    "created": created.isoformat(), "age_seconds": int((now - created).total_seconds())})
    return sorted(out, key=lambda b: (b["created"], b["file"]), reverse=True)


def prune(directory: Path, keep: int, max_age_days: int, now: datetime | None = None,
          dry_run: bool = False) -> list[dict]:
    """Delete backups beyond retention; returns the deleted ones.

    Why both: the newest ``keep`` are never deleted, whatever their age (a stack that has not
    migrated for months still has its last backups); of the others, those older than
    ``max_age_days`` go (0: the count alone decides). ``keep`` is at least 1.
    """
    if keep < 1:
        raise ValueError("keep must be at least 1: the newest backup is never pruned")
    backups = list_backups(directory, now)
    doomed = [b for b in backups[keep:] if b["age_seconds"] >= max_age_days * 86400]
    if not dry_run:
        for b in doomed:
            Path(b["path"]).unlink(missing_ok=True)
    return doomed
