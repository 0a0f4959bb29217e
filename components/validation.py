"""Validation: every check of runbook 11.1 that applies, run on the host after each deploy (3.8, 11).

Its command text carries a fingerprint of every step it validates, so it runs again exactly
when any of them changed. It takes no secret input (the script reads the DB password from
the service's own .env on the host), so every check is shown live during `pulumi up`. Any failed check fails `pulumi up` with the full list (the
script prints every check before it exits non-zero); the report is a stack output.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Optional, Sequence

import pulumi

from components.config import Service
from components.database import Database
from components.remote import Step
from components.reports import report_from_stdout
from components.server import Server


@dataclass
class ValidationArgs:
    server: Server
    service: Service
    database: Database
    db_host: str
    expected_schema_version: int
    prometheus_url: str
    after: Sequence[pulumi.Resource]
    fingerprint_of: Sequence[str] = field(default_factory=list)


class Validation(pulumi.ComponentResource):
    report: pulumi.Output[dict]

    def __init__(self, name: str, args: ValidationArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("hft:app:Validation", name, None, opts)
        svc, db = args.service, args.database.config
        fingerprint = hashlib.sha256("\n".join(args.fingerprint_of).encode()).hexdigest()[:16]
        command = Step(f"{name}-validate", "validate.sh", {
            "HFT_DEPLOY_FINGERPRINT": fingerprint,
            "HFT_HOME": svc.home, "HFT_CONFIG": svc.config_path, "HFT_UNIT_NAME": "hft_system",
            "HFT_API": f"http://127.0.0.1:{svc.api_port}", "HFT_DB_HOST": args.db_host, "HFT_DB_PORT": "5432",
            "HFT_DB_NAME": db.name, "HFT_DB_USER": db.user,
            "HFT_EXPECTED_SCHEMA_VERSION": str(args.expected_schema_version),
            "HFT_LOG_DIR": svc.log_dir, "HFT_PROMETHEUS": args.prometheus_url,
            "HFT_EXPECTED_VERSION": svc.expected_version,
        }).create(args.server.connection, self, depends_on=list(args.after))
        self.report = report_from_stdout(command.stdout, "HFT_VALIDATION_REPORT")
        self.register_outputs({"report": self.report})
