"""Throwaway real PostgreSQL clusters for tests, from Debian's server packages.

Why: the migration engine and the C++ workload must be tested against a real server,
not mocks, yet CI has no running database. This module starts one from the installed
Debian binaries in a temporary directory and removes it afterwards, even on error.

Standard library only, so any test suite (Python or a C++ test driver written in Python)
can import it without extra dependencies::

    from tests.pgcluster import temporary_cluster

    with temporary_cluster() as pg:
        pg.create_role("hft_user", "s3cret")
        pg.create_database("hft_db", owner="hft_user")
        dsn = pg.dsn("hft_db", user="hft_user", password="s3cret")

Authentication: TCP connections on 127.0.0.1 use scram-sha-256 (so tests exercise real
passwords); the Unix socket in ``socket_dir`` uses trust, which is how this helper runs
its own administrative SQL without putting a password anywhere.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

PG_ROOT = Path("/usr/lib/postgresql")
INSTALL_HINT = "tools/install-apt-deps.sh deps/apt/migrations.txt"
SERVER_USER = "postgres"


class PgClusterError(RuntimeError):
    """The cluster could not be found, started or used; the message says what to do."""


def find_bin_dir() -> Path:
    """Return the bin directory of the newest installed PostgreSQL server.

    Why newest: Debian may have several major versions side by side after an upgrade;
    tests should run against the one a fresh install would use.
    """
    versions: list[tuple[tuple[int, ...], Path]] = []
    if PG_ROOT.is_dir():
        for child in PG_ROOT.iterdir():
            if re.fullmatch(r"\d+(\.\d+)?", child.name) and (child / "bin" / "initdb").exists():
                versions.append((tuple(int(p) for p in child.name.split(".")), child / "bin"))
    if not versions:
        raise PgClusterError(
            "No PostgreSQL server is installed (no /usr/lib/postgresql/<version>/bin/initdb). "
            "The Debian package 'postgresql' (which pulls in postgresql-<version>) is missing; "
            f"install it with: {INSTALL_HINT}"
        )
    return max(versions)[1]


def _free_port() -> int:
    """Ask the kernel for a free TCP port on 127.0.0.1 (small race, retried on start)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def quote_ident(name: str) -> str:
    """Quote an SQL identifier (double quotes, embedded quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """Quote an SQL string literal (standard_conforming_strings is on by default)."""
    if "\x00" in value:
        raise ValueError("NUL byte in SQL literal")
    return "'" + value.replace("'", "''") + "'"


@dataclass
class Cluster:
    """A running throwaway cluster. Build it with :func:`temporary_cluster`."""

    bin_dir: Path
    base_dir: Path
    port: int
    superuser: str = SERVER_USER
    superuser_password: str = field(default_factory=lambda: secrets.token_urlsafe(18), repr=False)
    host: str = "127.0.0.1"

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> str:
        return str(self.base_dir / "sock")

    @property
    def log_file(self) -> Path:
        return self.base_dir / "server.log"

    @property
    def version(self) -> str:
        return self.bin_dir.parent.name

    def bin(self, name: str) -> str:
        """Path of a server-side binary of this version (pg_dump, pg_restore, psql...)."""
        path = self.bin_dir / name
        if not path.exists():
            raise PgClusterError(f"{path} does not exist")
        return str(path)

    def dsn(self, dbname: str = "postgres", user: str | None = None,
            password: str | None = None) -> str:
        """libpq conninfo string for a TCP connection to 127.0.0.1:port.

        With ``user`` None the superuser and its password are used.
        """
        if user is None:
            user = self.superuser
            if password is None:
                password = self.superuser_password
        parts = [f"host={self.host}", f"port={self.port}", f"dbname={_conninfo_value(dbname)}",
                 f"user={_conninfo_value(user)}", "connect_timeout=10"]
        if password is not None:
            parts.append(f"password={_conninfo_value(password)}")
        return " ".join(parts)

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run SQL as the superuser over the Unix socket; SQL goes on stdin, never argv.

        Returns psql's unaligned, tuples-only stdout. Raises PgClusterError on failure.
        """
        cmd = [self.bin("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
               "-h", self.socket_dir, "-p", str(self.port), "-U", self.superuser, "-d", dbname]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        proc = subprocess.run(cmd, input=sql, capture_output=True, text=True, env=env,
                              timeout=120, check=False)
        if proc.returncode != 0:
            raise PgClusterError(f"psql failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout

    def create_role(self, name: str, password: str, *, superuser: bool = False) -> None:
        """Create a LOGIN role. The password travels in SQL on psql's stdin (not argv)."""
        extra = " SUPERUSER" if superuser else ""
        self.psql(f"CREATE ROLE {quote_ident(name)} LOGIN{extra} "
                  f"PASSWORD {quote_literal(password)};")

    def create_database(self, name: str, owner: str | None = None) -> None:
        """Create a database, optionally owned by ``owner`` (who also owns schema public)."""
        sql = f"CREATE DATABASE {quote_ident(name)}"
        if owner:
            sql += f" OWNER {quote_ident(owner)}"
        self.psql(sql + ";")
        if owner:
            # PostgreSQL 15 no longer lets every role create in schema public.
            self.psql(f"ALTER SCHEMA public OWNER TO {quote_ident(owner)};", dbname=name)

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting its sessions first."""
        self.psql(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE);")


def _conninfo_value(value: str) -> str:
    """Quote a conninfo value when needed (libpq: single quotes, backslash escapes)."""
    if value and re.fullmatch(r"[A-Za-z0-9_.\-/:@]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _as_server_user(cmd: list[str]) -> list[str]:
    """postgres refuses to run as root: when we are root, run it as the postgres user."""
    if os.geteuid() == 0:
        return ["runuser", "-u", SERVER_USER, "--", *cmd]
    return cmd


def _run(cmd: list[str], cwd: Path, timeout: float = 120) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C.UTF-8"
    proc = subprocess.run(_as_server_user(cmd), cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise PgClusterError(f"{Path(cmd[0]).name} failed ({proc.returncode}): "
                             f"{proc.stdout.strip()} {proc.stderr.strip()}")


def _prepare_dir() -> Path:
    base = Path(tempfile.mkdtemp(prefix="pgcluster-"))
    (base / "sock").mkdir()
    if os.geteuid() == 0:
        import pwd  # noqa: PLC0415 - Unix only, needed only as root

        pw = pwd.getpwnam(SERVER_USER)
        for p in (base, base / "sock"):
            os.chown(p, pw.pw_uid, pw.pw_gid)
    return base


def _initdb(cluster: Cluster) -> None:
    pwfile = cluster.base_dir / "pwfile"
    pwfile.write_text(cluster.superuser_password + "\n")
    pwfile.chmod(0o600)
    if os.geteuid() == 0:
        import pwd  # noqa: PLC0415

        pw = pwd.getpwnam(SERVER_USER)
        os.chown(pwfile, pw.pw_uid, pw.pw_gid)
    try:
        _run([cluster.bin("initdb"), "-D", str(cluster.data_dir), "-U", cluster.superuser,
              f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256",
              "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"], cwd=cluster.base_dir)
    finally:
        pwfile.unlink(missing_ok=True)


def _start(cluster: Cluster) -> None:
    opts = (f"-c listen_addresses=127.0.0.1 -p {cluster.port} "
            f"-c unix_socket_directories={cluster.socket_dir} "
            # Throwaway cluster: durability costs time and buys nothing.
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200 -c shared_buffers=32MB")
    _run([cluster.bin("pg_ctl"), "-D", str(cluster.data_dir), "-l", str(cluster.log_file),
          "-w", "-t", "60", "-o", opts, "start"], cwd=cluster.base_dir, timeout=90)


def _stop(cluster: Cluster) -> None:
    """Stop fast; if pg_ctl cannot, kill the postmaster we started (by its pid file)."""
    if not (cluster.data_dir / "postmaster.pid").exists():
        return
    try:
        _run([cluster.bin("pg_ctl"), "-D", str(cluster.data_dir), "-m", "fast", "-w",
              "-t", "30", "stop"], cwd=cluster.base_dir, timeout=45)
    except (PgClusterError, subprocess.TimeoutExpired):
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((cluster.data_dir / "postmaster.pid").read_text().splitlines()[0])
            os.kill(pid, 9)
            time.sleep(0.5)


@contextlib.contextmanager
def temporary_cluster(attempts: int = 3) -> Iterator[Cluster]:
    """Start a fresh cluster on a free 127.0.0.1 port; stop and delete it on exit."""
    bin_dir = find_bin_dir()
    base = _prepare_dir()
    cluster = Cluster(bin_dir=bin_dir, base_dir=base, port=_free_port())
    try:
        _initdb(cluster)
        for attempt in range(attempts):
            try:
                _start(cluster)
                break
            except PgClusterError as exc:
                log = cluster.log_file.read_text() if cluster.log_file.exists() else ""
                if attempt + 1 == attempts or "could not bind" not in log + str(exc):
                    raise PgClusterError(f"{exc}\n--- server log ---\n{log[-3000:]}") from exc
                cluster.port = _free_port()  # lost the port race; try another one
        yield cluster
    finally:
        try:
            _stop(cluster)
        finally:
            shutil.rmtree(base, ignore_errors=True)


def cluster_fixture(scope: str = "module") -> Callable[..., Iterator[Cluster]]:
    """Build a pytest fixture yielding one cluster per ``scope``.

    Usage in a test module: ``pg = cluster_fixture()``. pytest is imported lazily so this
    module stays standard-library only for non-pytest users.
    """
    import pytest  # noqa: PLC0415

    @pytest.fixture(scope=scope)
    def _fixture() -> Iterator[Cluster]:
        with temporary_cluster() as pg:
            yield pg

    return _fixture
