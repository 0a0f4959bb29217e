"""HftService: the hft_system release of one app placement, its config, secrets and systemd unit
(runbook 3.5, 3.6, 7.1).

The placement's git tag is checked out and built with CMake on its host. The new binary
validates the new config before the running service is touched: a bad config fails the
update with the validator's message and the service keeps running (runbook 7.1). Secrets
(DB password, exchange API keys, the API token) reach the host only as ``.env`` (root, mode
600: systemd reads it as root; the service never needs the file), written from the script's
stdin. A config change is hot-reloaded unless it touches a key only a restart applies; a change
of role or trading alone is the cutover's (through the API); a primary holding the trading lease
is never restarted unless ``service.allowPrimaryRestart`` says so.

Moving a placement to another host replaces this component's step, deleting first: the service
is stopped and its unit removed on the old host before it is installed on the new one, so a
moved standby never keeps running (let alone trading) where it was.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import pulumi

from components.database import Database
from components.reader import (BOOL, GIT_URL, IDENT, OCTAL_MODE, PACKAGE, UNIT_NAME, ListOf, Rule, Section,
                               abs_path, choice, integer, pattern, setting, text)
from components.remote import Step
from components.reports import report_from_stdout
from components.server import Server
from components.topology import AppPlacement

UNIT_RESTART = ("no", "on-success", "on-failure", "on-abnormal", "on-watchdog", "on-abort", "always")
OUTPUTS = ("journal", "journal+console", "null", "inherit", "kmsg")


@dataclass(frozen=True)
class UnitSettings:
    """The systemd unit of runbook 3.6 step 1."""
    description: str = setting("description", text(120), "Description=", "3.6 step 1")
    after: tuple[str, ...] = setting("after", ListOf(UNIT_NAME), "After=", "3.6 step 1")
    wants: tuple[str, ...] = setting("wants", ListOf(UNIT_NAME), "Wants=", "3.6 step 1")
    type: str = setting("type", choice("simple", "exec", "notify"), "Type=", "3.6 step 1")
    restart: str = setting("restart", choice(*UNIT_RESTART), "Restart=", "3.6 step 1")
    restart_sec: int = setting("restartSec", integer(0, 3600), "RestartSec=", "3.6 step 1")
    standard_output: str = setting("standardOutput", choice(*OUTPUTS), "StandardOutput=", "3.6 step 1")
    standard_error: str = setting("standardError", choice(*OUTPUTS), "StandardError=", "3.6 step 1")
    syslog_identifier: str = setting("syslogIdentifier", pattern(r"[A-Za-z0-9_.-]{1,40}", "an identifier"),
                                     "SyslogIdentifier=", "3.6 step 1")
    limit_nofile: str = setting("limitNOFILE", pattern(r"\d+|infinity", "a number or infinity"),
                                "LimitNOFILE=", "3.6 step 1")
    limit_memlock: str = setting("limitMEMLOCK", pattern(r"\d+[KMG]?|infinity", "a size or infinity"),
                                 "LimitMEMLOCK=", "3.6 step 1")
    no_new_privileges: bool = setting("noNewPrivileges", BOOL, "NoNewPrivileges=", "3.6 step 1")
    private_tmp: bool = setting("privateTmp", BOOL, "PrivateTmp=", "3.6 step 1")
    wanted_by: str = setting("wantedBy", UNIT_NAME, "WantedBy=", "3.6 step 1")


def _strategy(v: Any) -> bool | str:
    if not isinstance(v, dict) or not isinstance(v.get("id"), str):
        return False
    import re
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", v["id"]):
        return "a strategy id of letters, digits, _ . - (1-64)"
    allowed = {"id", "name", "symbol", "exchange", "paper_trading", "max_position", "autostart"}
    extra = sorted(set(v) - allowed)
    return True if not extra else f"a strategy object with keys from {', '.join(sorted(allowed))} (unknown: {', '.join(extra)})"


STRATEGY = Rule("a strategy object with an id (id, name, symbol, exchange, paper_trading, max_position, "
                "autostart)", _strategy)


@dataclass(frozen=True)
class ServiceSettings:
    """The application (runbook 3.5, 3.6)."""
    user: str = setting("user", IDENT.where(lambda v: v != "root", "a non-root user name"),
                        "service user", "3.5 step 1")
    home: str = setting("home", abs_path("/opt/", "/srv/"), "installation directory", "1.3, 3.5")
    log_dir: str = setting("logDir", abs_path("/var/log/"), "log directory", "3.5 step 5")
    log_dir_mode: str = setting("logDirMode", OCTAL_MODE, "log directory mode", "3.5 step 5")
    repository: str = setting("repository", GIT_URL, "the hft_system git repository", "3.5 step 2",
                              lab="git://198.18.0.1/hft_system.git (tools/serve-releases.sh)")
    build_type: str = setting("buildType", choice("Release", "RelWithDebInfo", "Debug"), "CMake build type",
                              "3.5 step 3")
    build_packages: tuple[str, ...] = setting("buildPackages", ListOf(PACKAGE), "packages the build needs",
                                              "3.3, 3.5 step 3")
    health_timeout_seconds: int = setting("healthTimeoutSeconds", integer(5, 3600),
                                          "how long a (re)started service may take to become healthy", "3.6 step 3")
    api_port: int = setting("apiPort", integer(1024, 65535), "control API port", "3.7, 11.1")
    exchanges: tuple[str, ...] = setting("exchanges", ListOf(pattern(r"[a-z0-9_-]{1,32}", "an exchange name"),
                                                             min_items=1, unique=True),
                                         "exchanges; each needs <NAME>_API_KEY/_SECRET in hft:exchangeKeys", "3.5 step 7")
    strategies: tuple[Any, ...] = setting("strategies", ListOf(STRATEGY), "strategies in production.json", "7.2")
    trading_enabled: bool = setting("tradingEnabled", BOOL, "the primary trades once deployed (a standby never "
                                    "does)", "4.1 step 7", lab="true: blue trades in the lab")
    tick_interval_ms: int = setting("tickIntervalMs", integer(10, 60000), "one market-data tick and strategy "
                                    "evaluation; hot-reloaded without a restart", "7.1")
    db_connect_timeout_seconds: int = setting("dbConnectTimeoutSeconds", integer(1, 300), "database connect "
                                              "timeout; applied only at start (a restart)", "7.1")
    allow_primary_restart: bool = setting("allowPrimaryRestart", BOOL, "a change that needs a restart may "
                                          "restart the primary while it trades (a trading gap); otherwise the "
                                          "update refuses and says to cut over first", "4.1, 7.1 step 4")
    shutdown_timeout_seconds: int = setting("shutdownTimeoutSeconds", integer(1, 600), "graceful shutdown limit",
                                            "4.1 step 7")
    unit: UnitSettings = setting("unit", Section(UnitSettings), "the systemd unit", "3.6 step 1")

    @property
    def config_path(self) -> str:
        return f"{self.home}/config/production.json"


def render_app_config(svc: ServiceSettings, app: AppPlacement, db_host: str, db_name: str, db_user: str) -> str:
    """production.json: everything the engine needs except secrets, which come from .env."""
    doc = {
        "role": app.role,
        "trading_enabled": app.trading_enabled,
        "api": {"bind": app.api_bind, "port": svc.api_port},
        "log_dir": svc.log_dir,
        "database": {"host": db_host, "port": 5432, "name": db_name, "user": db_user,
                     "connect_timeout_seconds": svc.db_connect_timeout_seconds},
        "exchanges": [{"name": x, "enabled": True} for x in svc.exchanges],
        "strategies": [dict(s) for s in svc.strategies],
        "strategies_dir": "strategies",
        "shutdown_timeout_seconds": svc.shutdown_timeout_seconds,
        "tick_interval_ms": svc.tick_interval_ms,
    }
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def render_unit(svc: ServiceSettings) -> str:
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


def render_env(secrets: Mapping[str, str], db_password: str, api_token: str) -> str:
    values = {**dict(sorted(secrets.items())), "DB_PASSWORD": db_password, "HFT_API_TOKEN": api_token}
    return "".join(f"{k}={env_value(v)}\n" for k, v in values.items())


@dataclass
class HftServiceArgs:
    server: Server
    """The host of this placement."""
    placement: AppPlacement
    """Which color, its version, role, trading flag, API address."""
    service: ServiceSettings
    """The application's settings."""
    database: Database
    """The database it uses."""
    db_host: str
    """How this host reaches the database host (loopback when co-located)."""
    exchange_keys: pulumi.Input[Mapping[str, str]]
    """Exchange API keys (secret)."""
    api_token: pulumi.Input[str]
    """Token for the API's state-changing endpoints (secret)."""
    after: list
    """Steps this waits for (migrations, the host's packages)."""


class HftService(pulumi.ComponentResource):
    """hft_system on one host, at one version, in one role."""

    version: pulumi.Output[str]
    ready: pulumi.Resource

    def __init__(self, name: str, args: HftServiceArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("hft:app:HftService", name, None, opts)
        svc, db, app = args.service, args.database.config, args.placement
        env = {
            "HFT_USER": svc.user, "HFT_HOME": svc.home, "HFT_LOG_DIR": svc.log_dir,
            "HFT_LOG_DIR_MODE": svc.log_dir_mode, "HFT_REPO": svc.repository, "HFT_VERSION": app.version,
            "HFT_BUILD_TYPE": svc.build_type, "HFT_BUILD_PACKAGES": " ".join(svc.build_packages),
            "HFT_UNIT_NAME": "hft_system",
            "HFT_HEALTH_URL": f"{app.api_url}/api/v1/health",
            "HFT_HEALTH_TIMEOUT": str(svc.health_timeout_seconds),
            "HFT_ALLOW_PRIMARY_RESTART": "1" if svc.allow_primary_restart else "0",
        }
        files = {"production.json": render_app_config(svc, app, args.db_host, db.name, db.user),
                 "hft_system.service": render_unit(svc)}
        dotenv = pulumi.Output.all(args.exchange_keys, args.database.password, args.api_token).apply(
            lambda kv: render_env(kv[0], kv[1], kv[2]))
        step = Step(f"{name}-release", "service.sh", env, files, stdin=dotenv, delete_script="service_stop.sh")
        self.step, self.fingerprint = step, step.fingerprint
        # The host is a trigger: moving the placement replaces the step, and the old host's
        # delete (stop, disable, remove the unit) runs before the new host's create.
        self.command = step.create(args.server.connection, self, depends_on=list(args.after), secret=True,
                                   triggers=[app.host.name], delete_before_replace=True)
        self.ready = self.command
        # What the running service reported at the end of the step (version, role, pid, commit).
        self.report = pulumi.Output.unsecret(report_from_stdout(self.command.stdout, "HFT_SERVICE_REPORT"))
        self.version = self.report.apply(lambda r: "v" + r["version"] if r.get("version") else "unknown")
        self.register_outputs({"version": self.version, "report": self.report})
