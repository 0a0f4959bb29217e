"""Migrations: the repository's schema migrations, applied on the DB host by the engine (runbook 3.4, 5.2, 6).

The payload is the ``migrations/`` package itself (engine and SQL), so the command re-runs
exactly when the migration set's content changes, or the target (``hft:database.schemaVersion``)
or the backup retention does. On the host the script backs the database up before any change
(runbook 4.1 step 2), then goes to the target: ``up --to`` online, or ``down --to`` (the
rollback scripts, runbook 5.2).

Why the application is stopped for a rollback, and how: the database is shared by every color,
so there is no standby side to roll back on; a rollback under a running service pulls its schema
from under it (below 006 the trading primary loses its fencing). So, in this order:
  1. ``<db>-schema-stop-<color>`` on each app host, the trading primary first: stops the service
     (graceful: orders cancelled, lease released) when the schema it runs on is above the target;
     the primary only with ``hft:service.allowPrimaryRestart`` (otherwise it fails, nothing stopped);
  2. ``<db>-migrate``: refuses to roll back while any session of the app role is connected, takes
     a backup, runs the rollback scripts (restoring that backup if one fails);
  3. ``<db>-schema-start-<color>`` on each app host, the primary first: starts what step 1 stopped
     and waits until it is healthy.
Raising the target stops nothing: forward migrations run online, as at every release.
The target may not go below ``hft:database.minSchemaVersion`` (preview refuses it).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import pulumi

from components.database import MIGRATIONS, Database, migration_versions
from components.remote import Step, payload_dir
from components.reports import report_from_stdout
from components.server import Server
from components.topology import AppPlacement

__all__ = ["MIGRATIONS", "Migrations", "MigrationsArgs", "latest_version"]

UNIT = "hft_system"


def latest_version(root: Path = MIGRATIONS) -> int:
    return max(migration_versions(root), default=0)


@dataclass
class MigrationsArgs:
    server: Server
    """The database host."""
    database: Database
    """The database to migrate."""
    apps: Sequence[tuple[AppPlacement, Server]] = field(default_factory=tuple)
    """The application placements using the database, with their hosts: stopped for a schema
    rollback and started again after it."""
    allow_primary_stop: bool = False
    """hft:service.allowPrimaryRestart: the trading primary may be stopped for a rollback."""
    health_timeout_seconds: int = 90
    """How long a service started again after the rollback has to become healthy."""


class Migrations(pulumi.ComponentResource):
    expected_version: int
    report: pulumi.Output[dict]
    ready: pulumi.Resource

    def __init__(self, name: str, args: MigrationsArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("hft:db:Migrations", name, None, opts)
        db = args.database.config
        files = payload_dir(MIGRATIONS, "migrations", ["*.py", "*.sql", "rollback/*.sql"])
        target = db.target_version
        self.expected_version = target
        apps = sorted(args.apps, key=lambda a: a[0].role != "primary")   # the primary first

        stops: list = []
        for app, server in apps:
            stops.append(Step(f"{name}-schema-stop-{app.color}", "schema_stop.sh", {
                "HFT_UNIT_NAME": UNIT, "HFT_API": app.api_url, "HFT_SCHEMA_TARGET": str(target),
                "HFT_PLACEMENT": app.name, "HFT_ALLOW_PRIMARY_STOP": "1" if args.allow_primary_stop else "0",
            }, lock=f"service-{UNIT}").create(server.connection, self, depends_on=[server.ready, *stops[-1:]]))

        step = Step(f"{name}-migrate", "migrations.sh", {
            "HFT_DB_HOST": "127.0.0.1", "HFT_DB_PORT": "5432",
            "HFT_DB_NAME": db.name, "HFT_DB_USER": db.user, "HFT_BACKUP_DIR": db.backup_dir,
            "HFT_SCHEMA_TARGET": str(target), "HFT_BACKUP_KEEP": str(db.backup_retention_count),
            "HFT_BACKUP_KEEP_DAYS": str(db.backup_retention_days),
        }, files, stdin=args.database.password.apply(lambda p: p + "\n"))
        self.fingerprint = step.fingerprint
        command = step.create(
            args.server.connection, self, depends_on=[args.database.ready, *stops], secret=True)
        self.migrate = command

        self.report = pulumi.Output.unsecret(report_from_stdout(command.stdout, "HFT_MIGRATIONS_REPORT"))
        # After any run of a stop step (its output, which names the time of a stop), not only when
        # the target changes: a rollback that failed leaves the apps stopped and the state of the
        # migrate and start steps as it was, so the update that follows with the target removed
        # has nothing else to run; the stop steps do run then (their target changed back).
        stopped = [pulumi.Output.from_input(s.stdout).apply(lambda t: hashlib.sha256((t or "").encode()).hexdigest()[:16])
                   for s in stops]
        last: pulumi.Resource = command
        for app, server in apps:
            last = Step(f"{name}-schema-start-{app.color}", "schema_start.sh", {
                "HFT_UNIT_NAME": UNIT, "HFT_HEALTH_URL": f"{app.api_url}/api/v1/health",
                "HFT_PLACEMENT": app.name, "HFT_HEALTH_TIMEOUT": str(args.health_timeout_seconds),
            }, lock=f"service-{UNIT}", rerun=f"schema target {target}").create(
                server.connection, self, depends_on=[last], triggers=stopped or None)
        self.ready = last
        self.register_outputs({"expected_version": self.expected_version, "report": self.report})
