"""Database: the application role and database, and their extensions (runbook 3.4 step 1).

The password is a ``random.RandomPassword``: it exists only as a Pulumi secret (encrypted in
state) and reaches the host on the script's stdin, never in a command line or a log.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_random as random

from components.config import Database as DatabaseConfig
from components.postgres import PostgresServer
from components.remote import Step
from components.server import Server


@dataclass
class DatabaseArgs:
    server: Server
    postgres: PostgresServer
    database: DatabaseConfig


class Database(pulumi.ComponentResource):
    password: pulumi.Output[str]
    ready: pulumi.Resource

    def __init__(self, name: str, args: DatabaseArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("hft:db:Database", name, None, opts)
        db = args.database
        self.config = db
        self.host = args.server.host
        secret = random.RandomPassword(f"{name}-password", length=db.password_length, special=False,
                                       opts=pulumi.ResourceOptions(parent=self))
        self.password = secret.result
        self.ready = Step(f"{name}-database", "database.sh", {
            "HFT_DB_NAME": db.name, "HFT_DB_USER": db.user,
            "HFT_DB_EXTENSIONS": " ".join(db.extensions),
            "HFT_DB_EXTENSIONS_OPTIONAL": "1" if db.extensions_optional else "0",
        }, stdin=self.password.apply(lambda p: p + "\n")).create(
            args.server.connection, self, depends_on=[args.postgres.ready], secret=True)
        self.register_outputs({"name": db.name, "user": db.user, "host": self.host.name})
