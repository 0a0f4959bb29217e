"""Migrations: the repository's schema migrations, applied on the DB host by the engine (runbook 3.4, 6).

The payload is the ``migrations/`` package itself (engine and SQL), so the command re-runs
exactly when the migration set's content changes. On the host the script backs the
database up first when anything is pending (runbook 4.1 step 2), then runs ``up``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pulumi

from components.reader import REPO
from components.database import Database
from components.remote import Step, payload_dir
from components.reports import report_from_stdout
from components.server import Server

MIGRATIONS = REPO / "migrations"


def latest_version(root: Path = MIGRATIONS) -> int:
    versions = [int(m.group(1)) for p in root.glob("*.sql") if (m := re.match(r"^(\d+)_", p.name))]
    return max(versions, default=0)


@dataclass
class MigrationsArgs:
    server: Server
    """The database host."""
    database: Database
    """The database to migrate."""


class Migrations(pulumi.ComponentResource):
    expected_version: int
    report: pulumi.Output[dict]
    ready: pulumi.Resource

    def __init__(self, name: str, args: MigrationsArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("hft:db:Migrations", name, None, opts)
        db = args.database.config
        files = payload_dir(MIGRATIONS, "migrations", ["*.py", "*.sql", "rollback/*.sql"])
        self.expected_version = latest_version()
        step = Step(f"{name}-migrate", "migrations.sh", {
            "HFT_DB_HOST": "127.0.0.1", "HFT_DB_PORT": "5432",
            "HFT_DB_NAME": db.name, "HFT_DB_USER": db.user, "HFT_BACKUP_DIR": db.backup_dir,
        }, files, stdin=args.database.password.apply(lambda p: p + "\n"))
        self.fingerprint = step.fingerprint
        command = step.create(
            args.server.connection, self, depends_on=[args.database.ready], secret=True)
        self.ready = command
        self.report = pulumi.Output.unsecret(report_from_stdout(command.stdout, "HFT_MIGRATIONS_REPORT"))
        self.register_outputs({"expected_version": self.expected_version, "report": self.report})
