"""Stack configuration: the runbook's values, a stack's overrides, parsed once and validated.

``config/runbook.yaml`` holds every default; a stack's ``Pulumi.<stack>.yaml`` overrides them
key by key under the ``hft`` namespace. Each section is read into the small dataclass declared
beside its component by the one generic reader (``components/reader.py``); every problem
(unknown key, wrong type, a value outside the grammar of the file it reaches, a missing
secret, a port collision, a placement on an undeclared host) is collected and raised together
as one :class:`ConfigError`, so ``pulumi preview`` fails before a single remote command is
registered. This module reads no files but the defaults and starts no process: the lab
inventory, where the stack uses it, is passed in.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

from components.baseline import BaselineSettings
from components.cutover import CutoverSettings
from components.database import DatabaseSettings
from components.monitoring import MonitoringSettings
from components.postgres import PostgresSettings
from components.reader import (ENV_NAME, HOSTNAME, REPO, ConfigError, MapOf, Rule, Section, choice, deep_merge,
                               read, setting, shown)
from components.realtime_kernel import RealtimeKernelSettings
from components.preflight import PreflightSettings
from components.server import Host, HostSettings, host_problems
from components.service import ServiceSettings
from components.strategy import StrategiesSettings
from components.validation import ValidationSettings
from components.topology import PLACEMENTS, ReleaseSettings, Topology, build as build_topology

RUNBOOK_DEFAULTS = REPO / "config" / "runbook.yaml"
ENVIRONMENTS = ("dev", "staging", "prod", "lab")
APPROVALS = ("none", "team-lead", "vp-engineering+trading-desk")  # runbook 1.2
# Secrets are accepted only here; a secret anywhere else would reach command text or state.
SECRET_KEYS = ("exchangeKeys", "sshPrivateKey", "dbPassword")
PG_PORT, SSH_PORT = 5432, 22
PLACEHOLDER_REPOSITORY = "https://github.com/company/hft_system.git"   # runbook 3.5 step 2's example
SECRET = Rule("a secret string, set with `pulumi config set --secret ... < file`", lambda v: False)

__all__ = ["ConfigError", "StackConfig", "parse", "check_exchange_keys", "Host"]


@dataclass(frozen=True)
class StackSettings:
    """The top level of a stack's ``hft:`` namespace."""
    environment: str = setting("environment", choice(*ENVIRONMENTS), "which environment this stack is", "1.2")
    approval: str = setting("approval", choice(*APPROVALS), "who approves a deployment (recorded)", "1.2")
    inventory: Optional[str] = setting("inventory", choice("lab"), "take host addresses and keys from the lab",
                                       optional=True, lab="lab")
    hosts: dict = setting("hosts", MapOf(HOSTNAME, Section(HostSettings)), "the machines of the stack", "3.1")
    placements: dict = setting("placements", MapOf(choice(*PLACEMENTS), HOSTNAME),
                               "which host each part runs on (app:blue, app:green, db, monitoring)", "1.2, 4")
    release: ReleaseSettings = setting("release", Section(ReleaseSettings), "versions per color, live color", "4")
    cutover: CutoverSettings = setting("cutover", Section(CutoverSettings), "watch window and gates", "4.1 step 8")
    validation: ValidationSettings = setting("validation", Section(ValidationSettings), "runbook 11.1 checks",
                                             "11.1")
    strategies: StrategiesSettings = setting("strategies", Section(StrategiesSettings),
                                             "the strategies on every app placement", "7.2, 5.3")
    baseline: BaselineSettings = setting("baseline", Section(BaselineSettings), "host tuning", "3.2, 3.3")
    realtime_kernel: RealtimeKernelSettings = setting("realtimeKernel", Section(RealtimeKernelSettings),
                                                      "RT kernel", "3.2 step 2")
    postgres: PostgresSettings = setting("postgres", Section(PostgresSettings), "database server", "3.3 step 3")
    database: DatabaseSettings = setting("database", Section(DatabaseSettings), "application database", "3.4")
    service: ServiceSettings = setting("service", Section(ServiceSettings), "the application", "3.5, 3.6")
    monitoring: MonitoringSettings = setting("monitoring", Section(MonitoringSettings), "monitoring", "3.7")
    preflight: PreflightSettings = setting("preflight", Section(PreflightSettings), "system requirements", "2.2")
    exchange_keys: Any = setting("exchangeKeys", MapOf(ENV_NAME, SECRET), "exchange API keys, "
                                 "<EXCHANGE>_API_KEY and _SECRET for each of service.exchanges", "3.5 step 7",
                                 optional=True)
    ssh_private_key: Any = setting("sshPrivateKey", SECRET, "the deploy key, where a host has no "
                                   "privateKeyFile", optional=True)
    db_password: Any = setting("dbPassword", SECRET, "the database password to keep, only to recover a lost "
                               "state (otherwise it is generated and lives in state)", "3.4", optional=True)


@dataclass(frozen=True)
class StackConfig:
    environment: str
    approval: str
    hosts: tuple[Host, ...]
    topology: Topology
    baseline: BaselineSettings
    realtime_kernel: RealtimeKernelSettings
    postgres: PostgresSettings
    database: DatabaseSettings
    service: ServiceSettings
    monitoring: MonitoringSettings
    preflight: PreflightSettings
    release: ReleaseSettings
    cutover: CutoverSettings
    strategies: StrategiesSettings
    validation: ValidationSettings
    exchange_secret_names: tuple[str, ...] = field(default=())


def _with_inventory(raw_hosts: Any, inventory: Optional[Mapping[str, Any]], problems: list[str]) -> Any:
    """Each lab host's address, key and kind from the inventory, under what the stack sets."""
    if inventory is None or not isinstance(raw_hosts, dict):
        return raw_hosts
    known = inventory.get("hosts", {})
    out = {}
    for name, settings in raw_hosts.items():
        lab = known.get(name)
        if lab is None:
            problems.append(f"hft:hosts.{name}: not in the lab inventory; start it with `python3 -m lab up {name}`")
            lab = {}
        base = {k: v for k, v in {"address": lab.get("address"), "port": lab.get("port"), "user": lab.get("user"),
                                  "hostKey": lab.get("host_key"), "privateKeyFile": lab.get("private_key"),
                                  "container": lab.get("kind", "container") == "container"}.items()
                if v is not None}
        out[name] = deep_merge(base, settings if isinstance(settings, dict) else {})
    return out


def _port_problems(cfg: StackConfig) -> list[str]:
    """Two services of one host on one port would fail at start, after the host was changed."""
    out = []
    topo = cfg.topology
    for host in cfg.hosts:
        ports: dict[int, list[str]] = {SSH_PORT: ["ssh"]}
        if host.name == topo.db.name:
            ports.setdefault(PG_PORT, []).append("postgresql")
        if host.name == topo.monitoring.name:
            ports.setdefault(cfg.monitoring.prometheus_port, []).append("monitoring.prometheusPort")
        ports.setdefault(cfg.monitoring.node_exporter_port, []).append("monitoring.nodeExporterPort")
        if any(a.host.name == host.name for a in topo.apps):
            ports.setdefault(cfg.service.api_port, []).append("service.apiPort")
        for port, users in ports.items():
            if len(users) > 1:
                out.append(f"hft:{users[-1]} = {port}: expected a port no other service of {host.name} uses "
                           f"(taken by {users[0]})")
    addresses: dict[str, str] = {}
    for host in cfg.hosts:
        if host.address in addresses:
            out.append(f"hft:hosts.{host.name}.address = \"{host.address}\": expected an address of its own "
                       f"(also {addresses[host.address]}'s)")
        addresses.setdefault(host.address, host.name)
    return out


def _conflicts(cfg: StackConfig) -> list[str]:
    """Keys that each pass their own rule but cannot work together: a later step would fail for
    certain, after earlier steps had changed the hosts."""
    out = []
    exts = list(cfg.database.extensions)
    if "timescaledb" in exts and not cfg.postgres.timescaledb and not cfg.database.extensions_optional:
        out.append(f"hft:database.extensions = {shown(exts)}: expected no timescaledb while hft:postgres.timescaledb "
                   "is false (its package would not be installed, so CREATE EXTENSION fails): remove it, set "
                   "postgres.timescaledb true, or set database.extensionsOptional true")
    pkgs = list(cfg.monitoring.packages)
    if "grafana" in pkgs and not cfg.monitoring.grafana:
        out.append(f"hft:monitoring.packages = {shown(pkgs)}: expected no grafana while hft:monitoring.grafana is "
                   "false (Grafana comes from its own repository and is installed by monitoring.grafana: true)")
    return out


def parse(values: Mapping[str, Any], inventory: Optional[Mapping[str, Any]] = None,
          defaults_file: Path = RUNBOOK_DEFAULTS) -> StackConfig:
    """Parse the stack's ``hft:*`` values (decoded from YAML) over the runbook defaults.

    ``inventory`` is the lab's (``python3 -m lab inventory``) where the stack says
    ``inventory: lab``; :class:`ConfigError` lists every problem found.
    """
    problems: list[str] = []
    merged = deep_merge(yaml.safe_load(defaults_file.read_text()), dict(values))
    if merged.get("inventory") == "lab":
        if inventory is None:
            problems.append('hft:inventory = "lab": expected the lab inventory to be passed in '
                            "(the program reads it with `python3 -m lab inventory`)")
        merged["hosts"] = _with_inventory(merged.get("hosts"), inventory, problems)
    raw_hosts = merged.get("hosts")
    if isinstance(raw_hosts, dict):
        defaults = merged.get("hostDefaults") or {}
        merged["hosts"] = {n: deep_merge(defaults, h if isinstance(h, dict) else {}) for n, h in raw_hosts.items()}
    merged.pop("hostDefaults", None)
    # Secrets are checked by check_exchange_keys and __main__; they never enter the dataclasses.
    merged.pop("exchangeKeys", None)
    merged.pop("sshPrivateKey", None)
    merged.pop("dbPassword", None)
    top: StackSettings = read(StackSettings, merged, "", problems)
    if problems:
        raise ConfigError(problems)
    hosts = tuple(Host.of(name, s) for name, s in top.hosts.items())
    for name, s in top.hosts.items():
        problems += host_problems(name, s, top.environment)
    try:
        topology = build_topology(hosts, top.placements, top.release, top.service.trading_enabled,
                                  top.service.api_port)
    except ConfigError as err:
        raise ConfigError(problems + err.problems) from None
    secret_names = tuple(f"{x.upper()}_API_{kind}" for x in top.service.exchanges for kind in ("KEY", "SECRET"))
    cfg = StackConfig(top.environment, top.approval, hosts, topology, top.baseline, top.realtime_kernel,
                      top.postgres, top.database, top.service, top.monitoring, top.preflight, top.release,
                      top.cutover, top.strategies, top.validation, secret_names)
    problems += _port_problems(cfg)
    problems += _conflicts(cfg)
    problems += cfg.strategies.problems(cfg.service)
    if cfg.environment != "lab" and cfg.service.repository == PLACEHOLDER_REPOSITORY:
        problems.append(f"hft:service.repository = \"{PLACEHOLDER_REPOSITORY}\": expected your hft_system "
                        "repository (this is the runbook's example URL)")
    if problems:
        raise ConfigError(problems)
    return cfg


def check_exchange_keys(keys: Any, names: tuple[str, ...]) -> None:
    """The exchange API keys are a secret object in stack config; each configured exchange needs both."""
    problems = []
    if not isinstance(keys, dict):
        raise ConfigError([f"hft:exchangeKeys is missing: expected a secret object with {', '.join(names)} "
                           "(set each from a file or stdin: `pulumi config set --secret --path "
                           "'hft:exchangeKeys.NAME' < file`)"])
    for name in names:
        if not isinstance(keys.get(name), str) or not keys.get(name):
            problems.append(f"hft:exchangeKeys.{name} is missing: expected a non-empty secret string "
                            f"(`pulumi config set --secret --path 'hft:exchangeKeys.{name}' < file`)")
    for name in sorted(set(keys) - set(names)):
        problems.append(f"hft:exchangeKeys.{name}: unknown key (allowed: {', '.join(names)})")
    if problems:
        raise ConfigError(problems)


def secret_problems(secret_keys: set[str]) -> list[str]:
    """A secret config key outside the two secret-only keys would end up in command text or state."""
    return [f"hft:{k} is a secret: expected plain config here (secrets are accepted only in "
            f"{', '.join('hft:' + s for s in SECRET_KEYS)}; a secret value elsewhere would reach command text "
            "and state in plaintext)" for k in sorted(secret_keys) if k not in SECRET_KEYS]


def default_state_url() -> str:
    """The per-user file backend `make env` uses when no BACKEND is given."""
    return f"file://{Path.home() / '.cache' / 'hft-deploy' / 'state'}"


def state_problems(environment: str, backend_url: Optional[str], local_url: str, allowed: bool) -> list[str]:
    """Staging and prod state belongs in a backend the operators share, with its lock.

    On the per-user cache directory two operators would each hold a state of their own (no
    shared lock, two truths about the same hosts) and a lost laptop would lose it; refused
    unless the operator says so (HFT_ALLOW_LOCAL_STATE=1).
    """
    if environment not in ("staging", "prod") or allowed or not backend_url:
        return []
    if backend_url.rstrip("/") != local_url.rstrip("/"):
        return []
    return [f"state backend = \"{backend_url}\": expected a backend the operators share for {environment} "
            "(e.g. `eval \"$(make -s env BACKEND=s3://bucket/hft-deploy)\"`, or `pulumi login` to Pulumi Cloud); "
            "this per-user cache directory has no lock shared with other operators and is lost with this "
            "machine. Set HFT_ALLOW_LOCAL_STATE=1 to use it anyway"]
