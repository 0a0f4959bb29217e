"""PostgresServer: PostgreSQL from the distribution (TimescaleDB where configured), tuned, and
listening exactly where the application hosts need it (runbook 3.3 step 3, 10).

``listen_addresses`` and the ``pg_hba`` entries of the application come from the topology:
loopback for a co-located service, the DB host's own address for the others, and one
scram-sha-256 line per application host, nothing wider. ``postgres.hba`` adds entries (for
example a replica), each given as fields and rendered here, never as raw lines.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi

from components.reader import (BOOL, CIDR, IDENT, PACKAGE, PG_SETTING_NAME, PG_SETTING_VALUE, ListOf, MapOf,
                               Section, choice, pattern, per_family, setting)
from components.remote import Step, managed_file
from components.server import Server

APT_URL = pattern(r"https?://[A-Za-z0-9.-]+(:\d+)?(/[A-Za-z0-9._~%+-]+)*/?", "an http(s) URL of an apt repository")
KEY_URL = pattern(r"https://[A-Za-z0-9.-]+(:\d+)?(/[A-Za-z0-9._~%+-]+)*/?|http://198\.18\.0\.\d{1,3}(:\d+)?(/[A-Za-z0-9._~%+-]+)*/?",
                  "an https URL of an ASCII-armored signing key (plain http only on the lab network)")

# Settings the topology owns: set here they would fight with it.
TOPOLOGY_SETTINGS = ("listen_addresses", "port", "hba_file", "include", "include_dir", "data_directory")


@dataclass(frozen=True)
class HbaEntry:
    """One pg_hba.conf line, as fields (runbook 10 step 3)."""
    type: str = setting("type", choice("host", "hostssl"), "connection type")
    database: str = setting("database", IDENT | choice("replication"), "database name, or replication")
    user: str = setting("user", IDENT, "role name")
    address: str = setting("address", CIDR, "client address range")
    method: str = setting("method", choice("scram-sha-256"), "authentication method (passwords only as SCRAM)")

    def line(self) -> str:
        return f"{self.type} {self.database} {self.user} {self.address} {self.method}"


@dataclass(frozen=True)
class PostgresSettings:
    """The database server (runbook 3.3 step 3)."""
    packages: tuple[str, ...] = setting("packages", ListOf(PACKAGE, min_items=1), "server packages", "3.3 step 3")
    timescaledb: bool = setting("timescaledb", BOOL, "install TimescaleDB from its repository", "3.3 step 3",
                                lab="false: its repository is not reachable")
    timescaledb_repository: dict = setting("timescaledbRepository", per_family(APT_URL),
                                           "TimescaleDB's apt repository per OS family (suite: the host's "
                                           "codename, component main), added where timescaledb is true",
                                           "3.3 step 3")
    timescaledb_key_url: str = setting("timescaledbKeyUrl", KEY_URL, "the repository's signing key (apt "
                                       "trusts it for that repository only: signed-by)", "3.3 step 3")
    settings: dict = setting("settings", MapOf(PG_SETTING_NAME, PG_SETTING_VALUE), "postgresql.conf values",
                             "3.3 step 3")
    hba: tuple[HbaEntry, ...] = setting("hba", ListOf(Section(HbaEntry)), "extra pg_hba entries", "10 step 3")

    def check(self, path: str) -> list[str]:
        owned = sorted(set(self.settings) & set(TOPOLOGY_SETTINGS))
        out = [f"hft:{path}.settings.{k} = {self.settings[k]!r}: expected not set here (it follows from the "
               f"placements: {', '.join(TOPOLOGY_SETTINGS)} are managed by hft-deploy)" for k in owned]
        preload = self.settings.get("shared_preload_libraries")
        if self.timescaledb and preload is not None and "timescaledb" not in _libraries(str(preload)):
            out.append(f"hft:{path}.settings.shared_preload_libraries = {preload!r}: expected a list that includes "
                       "timescaledb while postgres.timescaledb is true (TimescaleDB must be preloaded)")
        return out


def _libraries(value: str) -> list[str]:
    return [x.strip() for x in value.split(",") if x.strip()]


def preload_libraries(pg: PostgresSettings) -> dict[str, str]:
    """``shared_preload_libraries`` with TimescaleDB where it is on (its CREATE EXTENSION needs it
    preloaded, which postgres.sh applies with the restart pending_restart asks for)."""
    if not pg.timescaledb:
        return {}
    libs = _libraries(str(pg.settings.get("shared_preload_libraries", "")))
    return {"shared_preload_libraries": ",".join(libs if "timescaledb" in libs else ["timescaledb", *libs])}


def render_settings(pg: PostgresSettings, listen: Sequence[str]) -> str:
    values = {"listen_addresses": ",".join(listen), **pg.settings, **preload_libraries(pg)}
    return managed_file("3.3, 10", [f"{k} = '{v}'" for k, v in values.items()])


def render_hba(entries: Sequence[HbaEntry]) -> str:
    return "".join(e.line() + "\n" for e in entries)


@dataclass
class PostgresServerArgs:
    server: Server
    """The database host."""
    postgres: PostgresSettings
    """Packages and settings."""
    listen: Sequence[str]
    """Addresses to listen on (from the topology)."""
    hba: Sequence[HbaEntry]
    """Every pg_hba entry: the application hosts' (from the topology) and the configured ones."""
    after: pulumi.Resource
    """The host step this waits for."""


class PostgresServer(pulumi.ComponentResource):
    ready: pulumi.Resource

    def __init__(self, name: str, args: PostgresServerArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("hft:db:PostgresServer", name, None, opts)
        pg = args.postgres
        repos = ({f"HFT_TIMESCALEDB_REPO_{f.upper()}": url for f, url in sorted(pg.timescaledb_repository.items())}
                 | {"HFT_TIMESCALEDB_KEY_URL": pg.timescaledb_key_url} if pg.timescaledb else {})
        step = Step(f"{name}-postgresql", "postgres.sh", {
            "HFT_PG_PACKAGES": " ".join(pg.packages),
            "HFT_TIMESCALEDB": "1" if pg.timescaledb else "0",
            **repos,
        }, {"postgresql.conf": render_settings(pg, args.listen), "pg_hba.block": render_hba(args.hba)})
        self.step, self.fingerprint = step, step.fingerprint
        self.ready = step.create(args.server.connection, self, depends_on=[args.after])
        self.register_outputs({"host": args.server.host.name})
