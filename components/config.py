"""Stack configuration, parsed once into typed dataclasses and validated before anything runs.

The runbook's values live in ``config/runbook.yaml``; a stack's ``Pulumi.<stack>.yaml``
overrides them key by key under the ``hft`` namespace. Every problem found (unknown key,
wrong type, bad value, missing secret) is collected and raised together as one
:class:`ConfigError` naming the key, the value and what is allowed, so ``pulumi preview``
fails before a single remote command is registered.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

REPO = Path(__file__).resolve().parent.parent
RUNBOOK_DEFAULTS = REPO / "config" / "runbook.yaml"

ENVIRONMENTS = ("dev", "staging", "prod", "lab")
APPROVALS = ("none", "team-lead", "vp-engineering+trading-desk")  # runbook 1.2
ROLES = ("app", "db", "monitoring")
LIMIT_TYPES = ("soft", "hard", "-")
LIMIT_ITEMS = ("nofile", "memlock", "rtprio", "nproc", "core", "stack", "priority")
GOVERNORS = ("performance", "powersave", "ondemand", "schedutil", "conservative", "userspace")
UNIT_RESTART = ("no", "on-success", "on-failure", "on-abnormal", "on-watchdog", "on-abort", "always")
SERVICE_ROLES = ("primary", "standby")
HOSTNAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
TAG_RE = re.compile(r"^v\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$")
SYSCTL_KEY_RE = re.compile(r"^[a-z0-9_]+(\.[a-zA-Z0-9_-]+)+$")
PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
IDENT_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
ENV_NAME_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
DURATION_RE = re.compile(r"^\d+(ms|s|m)$")


class ConfigError(Exception):
    """Every problem in a stack's configuration, one per line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid stack configuration:\n  - " + "\n  - ".join(problems))


@dataclass(frozen=True)
class Network:
    """Static addressing of runbook 3.1 step 3, rendered to netplan."""
    interface: str
    prefix: int
    gateway: str
    nameservers: tuple[str, ...]


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    port: int
    user: str
    roles: tuple[str, ...]
    container: bool          # lab hosts share this machine's kernel: kernel-level steps are skipped
    host_key: str | None     # authorized_keys-format line the SSH connection pins
    private_key_file: str | None
    network: Network | None = None


@dataclass(frozen=True)
class Limit:
    domain: str
    type: str
    item: str
    value: str


@dataclass(frozen=True)
class Baseline:
    apt_upgrade: bool
    limits: tuple[Limit, ...]
    sysctl: Mapping[str, str]
    apply_sysctl: bool
    cpu_governor: str | None
    disabled_services: tuple[str, ...]
    gcc_version: str | None
    packages: tuple[str, ...]


@dataclass(frozen=True)
class RealtimeKernel:
    enabled: bool
    packages: tuple[str, ...]
    uname_pattern: str


@dataclass(frozen=True)
class Postgres:
    packages: tuple[str, ...]
    timescaledb: bool
    settings: Mapping[str, str]
    hba: tuple[str, ...]


@dataclass(frozen=True)
class Database:
    name: str
    user: str
    extensions: tuple[str, ...]
    extensions_optional: bool
    password_length: int
    backup_dir: str


@dataclass(frozen=True)
class Unit:
    description: str
    after: tuple[str, ...]
    wants: tuple[str, ...]
    type: str
    restart: str
    restart_sec: int
    standard_output: str
    standard_error: str
    syslog_identifier: str
    limit_nofile: str
    limit_memlock: str
    no_new_privileges: bool
    private_tmp: bool
    wanted_by: str


@dataclass(frozen=True)
class Service:
    user: str
    home: str
    log_dir: str
    log_dir_mode: str
    repository: str
    version: str
    build_type: str
    build_packages: tuple[str, ...]
    health_timeout_seconds: int
    api_port: int
    exchanges: tuple[str, ...]
    strategies: tuple[Mapping[str, Any], ...]
    role: str
    trading_enabled: bool
    shutdown_timeout_seconds: int
    unit: Unit

    @property
    def config_path(self) -> str:
        return f"{self.home}/config/production.json"

    @property
    def expected_version(self) -> str:
        return self.version.lstrip("v").split("-")[0]


@dataclass(frozen=True)
class Monitoring:
    packages: tuple[str, ...]
    grafana: bool
    scrape_interval: str
    app_metrics_path: str
    node_exporter_port: int


@dataclass(frozen=True)
class Preflight:
    min_cores: int
    min_ram_gb: int
    min_disk_gb: int
    required_os: str
    enforce: bool


@dataclass(frozen=True)
class StackConfig:
    environment: str
    approval: str
    hosts: tuple[Host, ...]
    baseline: Baseline
    realtime_kernel: RealtimeKernel
    postgres: Postgres
    database: Database
    service: Service
    monitoring: Monitoring
    preflight: Preflight
    exchange_secret_names: tuple[str, ...] = field(default=())

    def host_with_role(self, role: str) -> Host:
        return next(h for h in self.hosts if role in h.roles)


class _Section:
    """Reads one mapping of the config, recording problems instead of raising at the first."""

    def __init__(self, path: str, raw: Any, problems: list[str]):
        self.path, self.problems = path, problems
        if not isinstance(raw, dict):
            self.problem(path, raw, "an object (mapping)")
            raw = {}
        self.raw: dict[str, Any] = raw
        self.seen: set[str] = set()

    def problem(self, key: str, value: Any, allowed: str) -> None:
        self.problems.append(f"hft:{key} = {json.dumps(value, default=str)}: expected {allowed}")

    def _get(self, key: str, default: Any, check: Callable[[Any], bool], allowed: str) -> Any:
        self.seen.add(key)
        if key not in self.raw:
            if default is _REQUIRED:
                self.problems.append(f"hft:{self.path}.{key} is missing: expected {allowed}")
            return None if default is _REQUIRED else default
        value = self.raw[key]
        if not check(value):
            self.problem(f"{self.path}.{key}", value, allowed)
            return None if default is _REQUIRED else default
        return value

    def str(self, key: str, default: Any = None, pattern: re.Pattern[str] | None = None,
            choices: tuple[str, ...] | None = None, allowed: str = "a string") -> Any:
        if choices:
            allowed = "one of " + ", ".join(choices)
        elif pattern:
            allowed = f"{allowed} matching {pattern.pattern}"

        def ok(v: Any) -> bool:
            return isinstance(v, str) and (not pattern or bool(pattern.match(v))) and (not choices or v in choices)
        return self._get(key, default, ok, allowed)

    def int(self, key: str, default: Any = None, lo: int = 0, hi: int = 2**31) -> Any:
        return self._get(key, default, lambda v: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi,
                         f"an integer from {lo} to {hi}")

    def bool(self, key: str, default: Any = None) -> Any:
        return self._get(key, default, lambda v: isinstance(v, bool), "true or false")

    def strs(self, key: str, default: Any = None, pattern: re.Pattern[str] | None = None) -> tuple[str, ...]:
        allowed = "a list of strings" + (f" matching {pattern.pattern}" if pattern else "")
        value = self._get(key, default, lambda v: isinstance(v, list) and all(
            isinstance(i, str) and (not pattern or pattern.match(i)) for i in v), allowed)
        return tuple(value or ())

    def section(self, key: str) -> "_Section":
        self.seen.add(key)
        return _Section(f"{self.path}.{key}" if self.path else key, self.raw.get(key, {}), self.problems)

    def done(self) -> None:
        for key in sorted(set(self.raw) - self.seen):
            where = f"{self.path}.{key}" if self.path else key
            self.problems.append(
                f"hft:{where}: unknown key (allowed here: {', '.join(sorted(self.seen))})")


_REQUIRED = object()


def deep_merge(base: Any, override: Any) -> Any:
    """Objects merge key by key; anything else in ``override`` replaces ``base``."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = deep_merge(base.get(key), value) if key in base else value
        return merged
    return override


def lab_inventory() -> dict[str, Any]:
    """The lab's hosts as `python3 -m lab inventory` describes them (addresses, keys)."""
    proc = subprocess.run([sys.executable, "-m", "lab", "inventory"], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ConfigError([f"hft:inventory = \"lab\": `python3 -m lab inventory` failed: {proc.stderr.strip()}"])
    return json.loads(proc.stdout)


def _is_ip(value: Any) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


def _with_network(host: Host, n: "_Section") -> Host:
    ip_re = re.compile(r"^[0-9a-fA-F:.]+$")
    network = Network(
        interface=n.str("interface", "eth0", pattern=re.compile(r"^[a-z0-9]+$")),
        prefix=n.int("prefix", 24, 1, 128),
        gateway=n.str("gateway", _REQUIRED, pattern=ip_re),
        nameservers=n.strs("nameservers", [], ip_re))
    for key, value in [("gateway", network.gateway)] + [("nameservers", x) for x in network.nameservers]:
        if value and not _is_ip(value):
            n.problem(f"{n.path}.{key}", value, "an IP address")
    n.done()
    if host.container:
        n.problem(n.path, "(set)", "no network section on a container host (its address belongs to the lab)")
    return dataclasses.replace(host, network=network)


def _parse_hosts(raw: Any, inventory: Callable[[], dict[str, Any]] | None, environment: str,
                 problems: list[str]) -> tuple[Host, ...]:
    if not isinstance(raw, dict) or not raw:
        problems.append(f"hft:hosts = {json.dumps(raw, default=str)}: expected an object of host name -> settings")
        return ()
    lab = inventory() if inventory else None
    hosts = []
    for name, settings in raw.items():
        s = _Section(f"hosts.{name}", settings, problems)
        if not HOSTNAME_RE.match(str(name)):
            problems.append(f"hft:hosts.{name}: host name must match {HOSTNAME_RE.pattern}")
        known = (lab or {}).get("hosts", {}).get(name, {}) if lab else {}
        if lab is not None and not known:
            problems.append(f"hft:hosts.{name}: not in the lab inventory; start it with `python3 -m lab up {name}`")
        address = s.str("address", known.get("address", _REQUIRED), allowed="an IPv4/IPv6 address")
        if address is not None:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                s.problem(f"hosts.{name}.address", address, "an IPv4/IPv6 address")
        host = Host(
            name=name,
            address=address or "",
            port=s.int("port", known.get("port", 22), 1, 65535),
            user=s.str("user", known.get("user", "root"), pattern=IDENT_RE),
            roles=s.strs("roles", list(ROLES)),
            container=s.bool("container", lab is not None),
            host_key=s.str("hostKey", known.get("host_key")),
            private_key_file=s.str("privateKeyFile", known.get("private_key")),
        )
        if "network" in s.raw:
            host = _with_network(host, s.section("network"))
        else:
            s.seen.add("network")
        for role in host.roles:
            if role not in ROLES:
                s.problem(f"hosts.{name}.roles", list(host.roles), "roles from " + ", ".join(ROLES))
        if host.container and environment == "prod":
            s.problem(f"hosts.{name}.container", True, "false in prod (kernel-level steps cannot be skipped)")
        s.done()
        hosts.append(host)
    for role in ROLES:
        owners = [h.name for h in hosts if role in h.roles]
        if len(owners) != 1:
            problems.append(f"hft:hosts: exactly one host must have role {role!r}; found {owners or 'none'}")
    return tuple(hosts)


def parse(values: Mapping[str, Any], inventory: Callable[[], dict[str, Any]] | None = None,
          defaults_file: Path = RUNBOOK_DEFAULTS) -> StackConfig:
    """Parse the stack's ``hft:*`` values (already decoded from YAML) over the runbook defaults."""
    problems: list[str] = []
    defaults = yaml.safe_load(defaults_file.read_text())
    merged = deep_merge(defaults, dict(values))
    top = _Section("", merged, problems)
    environment = top.str("environment", _REQUIRED, choices=ENVIRONMENTS)
    approval = top.str("approval", "none", choices=APPROVALS)
    use_lab = top.str("inventory", None, choices=("lab",)) == "lab"
    top.seen.add("hosts")
    hosts = _parse_hosts(merged.get("hosts"), (inventory or lab_inventory) if use_lab else None,
                         environment or "", problems)
    top.seen.add("exchangeKeys")

    b = top.section("baseline")
    limits = []
    for i, item in enumerate(b.raw.get("limits", []) if isinstance(b.raw.get("limits", []), list) else []):
        ls = _Section(f"baseline.limits[{i}]", item, problems)
        limits.append(Limit(ls.str("domain", _REQUIRED), ls.str("type", _REQUIRED, choices=LIMIT_TYPES),
                            ls.str("item", _REQUIRED, choices=LIMIT_ITEMS),
                            ls.str("value", _REQUIRED, pattern=re.compile(r"^(\d+|unlimited|infinity)$"))))
        ls.done()
    b.seen.add("limits")
    b.seen.add("sysctl")
    sysctl: dict[str, str] = {}
    raw_sysctl = b.raw.get("sysctl", {})
    if not isinstance(raw_sysctl, dict):
        b.problem("baseline.sysctl", raw_sysctl, "an object of sysctl key -> value")
        raw_sysctl = {}
    for key, value in raw_sysctl.items():
        if not SYSCTL_KEY_RE.match(str(key)):
            b.problem(f"baseline.sysctl.{key}", value, f"a sysctl key matching {SYSCTL_KEY_RE.pattern}")
        elif isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
            b.problem(f"baseline.sysctl.{key}", value, "a number or a string of numbers")
        else:
            sysctl[str(key)] = str(value)
    baseline = Baseline(
        apt_upgrade=b.bool("aptUpgrade", _REQUIRED), limits=tuple(limits), sysctl=sysctl,
        apply_sysctl=b.bool("applySysctl", True),
        cpu_governor=b.str("cpuGovernor", None, choices=GOVERNORS),
        disabled_services=b.strs("disabledServices", []),
        gcc_version=b.str("gccVersion", None, pattern=re.compile(r"^\d+$")),
        packages=b.strs("packages", [], PACKAGE_RE))
    b.done()

    r = top.section("realtimeKernel")
    realtime = RealtimeKernel(r.bool("enabled", _REQUIRED), r.strs("packages", [], PACKAGE_RE),
                              r.str("unamePattern", "-rt"))
    r.done()

    p = top.section("postgres")
    settings = p._get("settings", {}, lambda v: isinstance(v, dict) and all(
        re.match(r"^[a-z_.]+$", str(k)) and isinstance(x, (str, int)) for k, x in v.items()),
        "an object of postgresql.conf name -> value")
    postgres = Postgres(p.strs("packages", [], PACKAGE_RE), p.bool("timescaledb", False),
                        {k: str(v) for k, v in (settings or {}).items()}, p.strs("hba", []))
    p.done()

    d = top.section("database")
    database = Database(d.str("name", _REQUIRED, pattern=IDENT_RE), d.str("user", _REQUIRED, pattern=IDENT_RE),
                        d.strs("extensions", []), d.bool("extensionsOptional", False),
                        d.int("passwordLength", 32, 16, 128), d.str("backupDir", "/var/backup"))
    d.done()

    s = top.section("service")
    u = s.section("unit")
    unit = Unit(
        description=u.str("description", _REQUIRED), after=u.strs("after", []), wants=u.strs("wants", []),
        type=u.str("type", "simple", choices=("simple", "exec", "notify")),
        restart=u.str("restart", "on-failure", choices=UNIT_RESTART), restart_sec=u.int("restartSec", 10, 0, 3600),
        standard_output=u.str("standardOutput", "journal"), standard_error=u.str("standardError", "journal"),
        syslog_identifier=u.str("syslogIdentifier", "hft_system"),
        limit_nofile=u.str("limitNOFILE", "65536", pattern=re.compile(r"^(\d+|infinity)$")),
        limit_memlock=u.str("limitMEMLOCK", "infinity", pattern=re.compile(r"^(\d+[KMG]?|infinity)$")),
        no_new_privileges=u.bool("noNewPrivileges", True), private_tmp=u.bool("privateTmp", True),
        wanted_by=u.str("wantedBy", "multi-user.target"))
    u.done()
    service = Service(
        user=s.str("user", _REQUIRED, pattern=IDENT_RE), home=s.str("home", _REQUIRED, pattern=re.compile(r"^/")),
        log_dir=s.str("logDir", _REQUIRED, pattern=re.compile(r"^/")),
        log_dir_mode=s.str("logDirMode", "755", pattern=re.compile(r"^[0-7]{3,4}$")),
        repository=s.str("repository", _REQUIRED), version=s.str("version", _REQUIRED, pattern=TAG_RE),
        build_type=s.str("buildType", "Release", choices=("Release", "RelWithDebInfo", "Debug")),
        build_packages=s.strs("buildPackages", [], PACKAGE_RE),
        health_timeout_seconds=s.int("healthTimeoutSeconds", 90, 5, 3600), api_port=s.int("apiPort", 8080, 1, 65535),
        exchanges=s.strs("exchanges", [], re.compile(r"^[a-z0-9_-]+$")),
        strategies=tuple(s._get("strategies", [], lambda v: isinstance(v, list) and all(
            isinstance(i, dict) and "id" in i for i in v), "a list of strategy objects with an id")),
        role=s.str("role", "primary", choices=SERVICE_ROLES), trading_enabled=s.bool("tradingEnabled", False),
        shutdown_timeout_seconds=s.int("shutdownTimeoutSeconds", 30, 1, 600), unit=unit)
    s.done()

    m = top.section("monitoring")
    monitoring = Monitoring(m.strs("packages", [], PACKAGE_RE), m.bool("grafana", False),
                            m.str("scrapeInterval", "1s", pattern=DURATION_RE),
                            m.str("appMetricsPath", "/api/v1/metrics", pattern=re.compile(r"^/")),
                            m.int("nodeExporterPort", 9100, 1, 65535))
    m.done()

    f = top.section("preflight")
    preflight = Preflight(f.int("minCores", 1, 1, 4096), f.int("minRamGb", 1, 1, 65536),
                          f.int("minDiskGb", 1, 1, 10**6), f.str("requiredOs", ""), f.bool("enforce", True))
    f.done()
    top.done()

    secret_names = tuple(f"{x.upper()}_API_{kind}" for x in service.exchanges for kind in ("KEY", "SECRET"))
    if problems:
        raise ConfigError(problems)
    return StackConfig(environment, approval, hosts, baseline, realtime, postgres, database, service, monitoring,
                       preflight, secret_names)


def check_exchange_keys(keys: Any, names: tuple[str, ...]) -> None:
    """The exchange API keys are a secret object in stack config; each configured exchange needs both."""
    problems = []
    if not isinstance(keys, dict):
        raise ConfigError([f"hft:exchangeKeys is missing: expected a secret object with {', '.join(names)} "
                           "(set it with `pulumi config set --secret --path 'hft:exchangeKeys.NAME' VALUE`)"])
    for name in names:
        if not isinstance(keys.get(name), str) or not keys.get(name):
            problems.append(f"hft:exchangeKeys.{name} is missing: expected a non-empty secret string "
                            f"(`pulumi config set --secret --path 'hft:exchangeKeys.{name}' VALUE`)")
    for name in sorted(set(keys) - set(names)):
        if not ENV_NAME_RE.match(name):
            problems.append(f"hft:exchangeKeys.{name}: unknown key (allowed: {', '.join(names)})")
    if problems:
        raise ConfigError(problems)
