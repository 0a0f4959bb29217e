"""Database: the application role and database, and their extensions (runbook 3.4 step 1).

The password is a ``random.RandomPassword``: it exists only as a Pulumi secret (encrypted in
state) and reaches the host on the script's stdin, never in a command line or a log.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_random as random

from components.postgres import PostgresServer
from components.reader import BOOL, IDENT, ListOf, abs_path, integer, pattern, setting
from components.remote import Step
from components.server import Server


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
