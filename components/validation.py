"""Validation: every check of runbook 11.1 that applies, run on an app placement's host after each
deploy (3.8, 11).

The checks are the runbook's own script, installed where its operators run it
(``/opt/hft_system/scripts/validate_deployment.sh``). The exchange and Prometheus checks warn,
as the runbook's do, unless ``validation.strict`` makes them fatal; the report says which.
Its command text carries a fingerprint of every step it validates (its host's steps, the data
layer, its service, monitoring), so it runs again exactly when any of them changed. It reads
no secret (the database is checked through the running service), so every check is shown
live during `pulumi up`. Any failed check fails `pulumi up` with the full list.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Optional, Sequence

import pulumi

from components.database import Database
from components.reader import BOOL, setting
from components.remote import Step
from components.reports import report_from_stdout
from components.server import Server
from components.service import ServiceSettings
from components.topology import AppPlacement


@dataclass(frozen=True)
class ValidationSettings:
    """Runbook 11.1's checks."""
    strict: bool = setting("strict", BOOL, "the exchange and Prometheus checks fail the update instead of "
                           "warning (the runbook's script only warns)", "11.1", lab="true: the tests rely on them")


@dataclass
class ValidationArgs:
    server: Server
    """The app placement's host."""
    placement: AppPlacement
    """Which color, version and API address to check."""
    service: ServiceSettings
    """The application's settings (paths, unit)."""
    database: Database
    """The database the service uses."""
    db_host: str
    """How this host reaches the database host."""
    expected_schema_version: int
    """The newest migration in the repository."""
    prometheus_url: str
    """How this host reaches Prometheus."""
    scrape_target: str
    """This placement's target as Prometheus scrapes it (host:port)."""
    strict: bool
    """Exchange and Prometheus checks fail instead of warning."""
    after: Sequence[pulumi.Resource]
    """Steps that must have run first."""
    fingerprint_of: Sequence[str] = field(default_factory=list)
    """Fingerprints of every step this validates: a change to any re-runs the validation."""


class Validation(pulumi.ComponentResource):
    report: pulumi.Output[dict]
    ready: pulumi.Resource

    def __init__(self, name: str, args: ValidationArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("hft:app:Validation", name, None, opts)
        svc, db, app = args.service, args.database.config, args.placement
        fingerprint = hashlib.sha256("\n".join(args.fingerprint_of).encode()).hexdigest()[:16]
        self.step = Step(f"{name}-validate", "validate.sh", {
            "HFT_DEPLOY_FINGERPRINT": fingerprint,
            "HFT_HOME": svc.home, "HFT_CONFIG": svc.config_path, "HFT_UNIT_NAME": "hft_system",
            "HFT_USER": svc.user, "HFT_API": app.api_url, "HFT_STRICT_CHECKS": "1" if args.strict else "0",
            "HFT_EXPECTED_SCHEMA_VERSION": str(args.expected_schema_version),
            "HFT_LOG_DIR": svc.log_dir, "HFT_PROMETHEUS": args.prometheus_url,
            "HFT_EXPECTED_VERSION": app.version.lstrip("v").split("-")[0], "HFT_SCRAPE_TARGET": args.scrape_target,
        })
        command = self.step.create(args.server.connection, self, depends_on=list(args.after))
        self.ready = command
        self.report = report_from_stdout(command.stdout, "HFT_VALIDATION_REPORT")
        self.register_outputs({"report": self.report})
