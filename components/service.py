"""HftService: the hft_system release, its config, secrets and systemd unit (runbook 3.5, 3.6, 7.1).

The configured git tag is checked out and built with CMake on the host. The new binary
validates the new config before the running service is touched: a bad config fails the
update with the validator's message and the service keeps running (runbook 7.1). Secrets
(DB password, exchange API keys) reach the host only as ``.env`` (mode 600, owner the service
user), written from the script's stdin.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Mapping, Optional

import pulumi

from components.config import Service
from components.database import Database
from components.remote import Step
from components.server import Server


def render_app_config(svc: Service, db_host: str, db_name: str, db_user: str) -> str:
    """production.json: everything the engine needs except secrets, which come from .env."""
    doc = {
        "role": svc.role,
        "trading_enabled": svc.trading_enabled,
        "api": {"bind": "0.0.0.0", "port": svc.api_port},
        "log_dir": svc.log_dir,
        "database": {"host": db_host, "port": 5432, "name": db_name, "user": db_user,
                     "connect_timeout_seconds": 5},
        "exchanges": [{"name": x, "enabled": True} for x in svc.exchanges],
        "strategies": [dict(s) for s in svc.strategies],
        "strategies_dir": "strategies",
        "shutdown_timeout_seconds": svc.shutdown_timeout_seconds,
    }
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def render_unit(svc: Service) -> str:
    """The systemd unit of runbook 3.6 step 1, every field from stack config."""
    u = svc.unit
    yes = {True: "true", False: "false"}
    return "\n".join([
        "# Managed by hft-deploy (runbook 3.6).",
        "[Unit]",
        f"Description={u.description}",
        f"After={' '.join(u.after)}",
        f"Wants={' '.join(u.wants)}",
        "",
        "[Service]",
        f"Type={u.type}",
        f"User={svc.user}",
        f"Group={svc.user}",
        f"WorkingDirectory={svc.home}",
        f"EnvironmentFile={svc.home}/.env",
        f"ExecStart={svc.home}/bin/hft_system --config={svc.config_path}",
        f"Restart={u.restart}",
        f"RestartSec={u.restart_sec}",
        f"StandardOutput={u.standard_output}",
        f"StandardError={u.standard_error}",
        f"SyslogIdentifier={u.syslog_identifier}",
        f"TimeoutStopSec={svc.shutdown_timeout_seconds + 10}",
        "",
        "# Resource limits",
        f"LimitNOFILE={u.limit_nofile}",
        f"LimitMEMLOCK={u.limit_memlock}",
        "",
        "# Security",
        f"NoNewPrivileges={yes[u.no_new_privileges]}",
        f"PrivateTmp={yes[u.private_tmp]}",
        "",
        "[Install]",
        f"WantedBy={u.wanted_by}",
        "",
    ])


def env_value(value: str) -> str:
    """A value in systemd EnvironmentFile syntax: double-quoted, with \\ and " escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_env(secrets: Mapping[str, str], db_password: str) -> str:
    values = {**dict(sorted(secrets.items())), "DB_PASSWORD": db_password}
    return "".join(f"{k}={env_value(v)}\n" for k, v in values.items())


@dataclass
class HftServiceArgs:
    server: Server
    service: Service
    database: Database
    db_host: str
    exchange_keys: pulumi.Input[Mapping[str, str]]
    after: pulumi.Resource


class HftService(pulumi.ComponentResource):
    """hft_system on one host, at one version."""

    version: pulumi.Output[str]
    ready: pulumi.Resource

    def __init__(self, name: str, args: HftServiceArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("hft:app:HftService", name, None, opts)
        svc, db = args.service, args.database.config
        env = {
            "HFT_USER": svc.user, "HFT_HOME": svc.home, "HFT_LOG_DIR": svc.log_dir,
            "HFT_LOG_DIR_MODE": svc.log_dir_mode, "HFT_REPO": svc.repository, "HFT_VERSION": svc.version,
            "HFT_BUILD_TYPE": svc.build_type, "HFT_BUILD_PACKAGES": " ".join(svc.build_packages),
            "HFT_UNIT_NAME": "hft_system",
            "HFT_HEALTH_URL": f"http://127.0.0.1:{svc.api_port}/api/v1/health",
            "HFT_HEALTH_TIMEOUT": str(svc.health_timeout_seconds),
        }
        files = {"production.json": render_app_config(svc, args.db_host, db.name, db.user),
                 "hft_system.service": render_unit(svc)}
        dotenv = pulumi.Output.all(args.exchange_keys, args.database.password).apply(
            lambda kv: render_env(kv[0], kv[1]))
        step = Step(f"{name}-service", "service.sh", env, files, stdin=dotenv,
                            delete_script="service_stop.sh")
        self.fingerprint = step.fingerprint
        self.command = step.create(
            args.server.connection, self, depends_on=[args.after], secret=True)
        self.ready = self.command
        self.version = pulumi.Output.from_input(svc.version)
        self.register_outputs({"version": self.version, "host": args.server.host.name})
