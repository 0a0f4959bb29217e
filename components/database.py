"""Database: the application role and database, and their extensions (runbook 3.4 step 1).

The password is a ``random.RandomPassword``: it exists only as a Pulumi secret (encrypted in
state) and reaches the host on the script's stdin, never in a command line or a log.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pulumi
import pulumi_random as random

from components.postgres import PostgresServer
from components.reader import BOOL, IDENT, REPO, ListOf, Rule, abs_path, integer, pattern, setting
from components.remote import Step
from components.server import Server


MIGRATIONS = REPO / "migrations"


def migration_versions(root: Path = MIGRATIONS) -> list[int]:
    """The versions of the forward migrations in ``migrations/`` (NNN_description.sql)."""
    return sorted(int(m.group(1)) for p in root.glob("*.sql") if (m := re.match(r"^(\d+)_", p.name)))


def _versions_text(versions: list[int]) -> str:
    return f"{versions[0]} to {versions[-1]}" if versions else "none"


def schema_version_rule() -> Rule:
    """A version of a migration file in ``migrations/`` (the files are contiguous: the engine
    refuses gaps), so the error names the range."""
    versions = migration_versions()
    return Rule(f"a migration version in migrations/: an integer from {_versions_text(versions)}",
                lambda v: isinstance(v, int) and not isinstance(v, bool) and v in versions)


@dataclass(frozen=True)
class DatabaseSettings:
    """The application's database (runbook 3.4)."""
    name: str = setting("name", IDENT, "database name", "3.4 step 1")
    user: str = setting("user", IDENT, "role that owns it; the service connects as this role", "3.4 step 1")
    extensions: tuple[str, ...] = setting("extensions", ListOf(IDENT, unique=True), "extensions to create",
                                          "3.4 step 1", lab="none: TimescaleDB is off")
    extensions_optional: bool = setting("extensionsOptional", BOOL, "skip an extension the server lacks "
                                        "instead of failing", "3.4 step 1")
    password_length: int = setting("passwordLength", integer(16, 128), "length of the generated password", "3.4")
    password_rotation: str = setting("passwordRotation", pattern(r"[A-Za-z0-9._-]{1,40}", "a label, e.g. a date"),
                                     "change this label to rotate the role's password on purpose; a password "
                                     "that changed without it (a lost state) fails the update instead", "3.4")
    backup_dir: str = setting("backupDir", abs_path("/var/backup", "/var/lib", "/srv", "/data"),
                              "where backups are written before migrations", "4.1 step 2, 5.2")
    schema_version: Optional[int] = setting(
        "schemaVersion", schema_version_rule(),
        "the schema version to run (absent: the newest migration). Lower: the apps using the database "
        "are stopped (gracefully; the trading primary only with hft:service.allowPrimaryRestart), a backup "
        "is taken, migrations/rollback/NNN_rollback.sql run down to it, the apps start again. Raise (or "
        "remove): the migrations re-apply, online, after a backup", "5.2, 6", optional=True)
    min_schema_version: int = setting(
        "minSchemaVersion", schema_version_rule(),
        "the oldest schema the deployed releases run on: schemaVersion may not go below it, and `ops restore` "
        "refuses a backup below it (the workload takes the trading lease from migration 006)", "5.2")
    backup_retention_count: int = setting(
        "backupRetentionCount", integer(1, 10000),
        "backups in backupDir: the newest N are always kept (pruned after each backup, and by `ops backups "
        "--prune`)", "5.2")
    backup_retention_days: int = setting(
        "backupRetentionDays", integer(0, 3650),
        "backups beyond the newest backupRetentionCount are deleted once this many days old (0: the count "
        "alone decides)", "5.2")

    @property
    def target_version(self) -> int:
        """The schema version the stack runs: schemaVersion, or the newest migration."""
        return self.schema_version if self.schema_version is not None else migration_versions()[-1]

    def check(self, path: str) -> list[str]:
        if self.schema_version is not None and self.schema_version < self.min_schema_version:
            versions = migration_versions()
            return [f"hft:{path}.schemaVersion = {self.schema_version}: expected a migration version from "
                    f"{self.min_schema_version} to {versions[-1]} (the deployed releases need at least "
                    f"{self.min_schema_version}, hft:{path}.minSchemaVersion; migrations/ holds "
                    f"{_versions_text(versions)})"]
        return []


@dataclass
class DatabaseArgs:
    server: Server
    """The database host."""
    postgres: PostgresServer
    """The server the database lives on."""
    database: DatabaseSettings
    """Name, role, extensions."""
    password: Optional[pulumi.Input[str]] = None
    """The live password to keep (secret hft:dbPassword), where the state that generated it was lost."""


class Database(pulumi.ComponentResource):
    password: pulumi.Output[str]
    ready: pulumi.Resource

    def __init__(self, name: str, args: DatabaseArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("hft:db:Database", name, None, opts)
        db = args.database
        self.config = db
        self.host = args.server.host
        if args.password is not None:
            self.password = pulumi.Output.secret(args.password)
        else:
            self.password = random.RandomPassword(f"{name}-password", length=db.password_length, special=False,
                                                  opts=pulumi.ResourceOptions(parent=self)).result
        self.ready = Step(f"{name}-role-and-database", "database.sh", {
            "HFT_DB_NAME": db.name, "HFT_DB_USER": db.user,
            "HFT_DB_EXTENSIONS": " ".join(db.extensions),
            "HFT_DB_EXTENSIONS_OPTIONAL": "1" if db.extensions_optional else "0",
            "HFT_DB_PASSWORD_ROTATION": db.password_rotation,
        }, stdin=self.password.apply(lambda p: p + "\n")).create(
            args.server.connection, self, depends_on=[args.postgres.ready], secret=True)
        self.register_outputs({"name": db.name, "user": db.user, "host": self.host.name})
