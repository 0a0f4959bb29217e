"""PostgresServer: PostgreSQL from the distribution (TimescaleDB where configured), tuned (runbook 3.3 step 3, 10)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi

from components.config import Postgres
from components.remote import Step, managed_file
from components.server import Server


def render_settings(pg: Postgres) -> str:
    return managed_file("3.3, 10", [f"{k} = {v}" for k, v in pg.settings.items()])


@dataclass
class PostgresServerArgs:
    server: Server
    postgres: Postgres
    after: pulumi.Resource


class PostgresServer(pulumi.ComponentResource):
    ready: pulumi.Resource

    def __init__(self, name: str, args: PostgresServerArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("hft:db:PostgresServer", name, None, opts)
        pg = args.postgres
        self.ready = Step(f"{name}-postgres", "postgres.sh", {
            "HFT_PG_PACKAGES": " ".join(pg.packages),
            "HFT_TIMESCALEDB": "1" if pg.timescaledb else "0",
        }, {"postgresql.conf": render_settings(pg), "pg_hba.block": "".join(f"{x}\n" for x in pg.hba)}).create(
            args.server.connection, self, depends_on=[args.after])
        self.register_outputs({"host": args.server.host.name})
