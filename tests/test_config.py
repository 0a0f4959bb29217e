"""Stack config: the committed stacks parse; every bad value is refused with key, value and what
is allowed, before anything runs (the grammar of the file, unit, SQL or shell it would reach)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from components.config import ConfigError, check_exchange_keys, parse, secret_problems

REPO = Path(__file__).resolve().parent.parent
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeButWellFormedKeyBlobForTheUnitTests0001"
REPOSITORY = "ssh://git@git.example.internal/trading/hft_system.git"
LAB_INVENTORY = {"hosts": {
    "hft-prod-01": {"address": "198.18.0.13", "port": 22, "user": "root", "private_key": "/nonexistent/key",
                    "host_key": KEY},
    "hft-prod-02": {"address": "198.18.0.14", "port": 22, "user": "root", "private_key": "/nonexistent/key",
                    "host_key": KEY}}}


def stack_values(stack: str) -> dict:
    doc = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text())["config"]
    values = {k[4:]: v for k, v in doc.items() if k not in ("hft:exchangeKeys", "hft:sshPrivateKey")}
    if stack != "lab":   # the committed placeholders are refused on purpose (see the tests below)
        for host in values["hosts"].values():
            host["hostKey"] = KEY
        values.setdefault("service", {})["repository"] = REPOSITORY
    return values


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_committed_stacks_parse_with_runbook_values(stack: str) -> None:
    cfg = parse(stack_values(stack))
    assert cfg.environment == stack
    assert cfg.baseline.sysctl["vm.nr_hugepages"] == "4096"
    assert cfg.baseline.sysctl["net.core.rmem_max"] == "134217728"
    assert ("hft_user", "hard", "memlock", "unlimited") in [(x.domain, x.type, x.item, x.value) for x in cfg.baseline.limits]
    assert cfg.service.unit.restart == "on-failure" and cfg.service.unit.restart_sec == 10
    assert cfg.monitoring.scrape_interval == "1s"
    assert cfg.service.health_timeout_seconds == 90
    assert not any(h.container for h in cfg.hosts)
    assert all(h.network and h.network.gateway == "10.0.0.1" for h in cfg.hosts if h.name.endswith("01"))


def test_prod_is_blue_and_green_as_the_runbook_describes() -> None:
    cfg = parse(stack_values("prod"))
    apps = {a.color: (a.host.name, a.role) for a in cfg.topology.apps}
    assert apps == {"blue": ("hft-prod-01", "primary"), "green": ("hft-prod-02", "standby")}
    assert cfg.topology.db.name == cfg.topology.monitoring.name == "hft-prod-01"


def test_lab_stack_takes_hosts_from_the_inventory() -> None:
    cfg = parse(stack_values("lab"), inventory=LAB_INVENTORY)
    assert [(h.name, h.address, h.container, h.host_key) for h in cfg.hosts] == [
        ("hft-prod-01", "198.18.0.13", True, KEY), ("hft-prod-02", "198.18.0.14", True, KEY)]
    assert cfg.preflight.enforce is False
    assert {a.color: a.trading_enabled for a in cfg.topology.apps} == {"blue": True, "green": False}


def test_a_lab_host_missing_from_the_inventory_is_named() -> None:
    inventory = {"hosts": {"hft-prod-01": LAB_INVENTORY["hosts"]["hft-prod-01"]}}
    with pytest.raises(ConfigError) as err:
        parse(stack_values("lab"), inventory=inventory)
    assert "hft:hosts.hft-prod-02: not in the lab inventory; start it with `python3 -m lab up hft-prod-02`" in str(err.value)


def test_defaults_live_only_in_runbook_yaml() -> None:
    """No section dataclass carries a default of its own: every value comes from runbook.yaml or the stack."""
    from components import config
    for cls in [config.StackSettings, *[f.metadata["rule"].cls for f in dataclasses.fields(config.StackSettings)
                                        if hasattr(f.metadata["rule"], "cls")]]:
        for f in dataclasses.fields(cls):
            assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING, (cls, f.name)


def with_(path: str, value) -> dict:
    """The prod stack with one key set (dotted path; the last part may contain dots: sysctl keys)."""
    values = stack_values("prod")
    node = values
    parts = path.split("/")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return values


def problems_of(values: dict) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse(values)
    return err.value.problems


# (config path, bad value, text the error must contain): each refused at preview, naming key and value.
BAD = [
    ("environment", "production", 'hft:environment = "production": expected one of dev, staging, prod, lab'),
    ("approval", "ceo", 'hft:approval = "ceo": expected one of none'),
    ("hosts/hft-prod-01/address", "10.0.0.300", 'hft:hosts.hft-prod-01.address = "10.0.0.300": expected an IPv4/IPv6 address'),
    ("hosts/hft-prod-01/address", "10.0.0.10\n", "expected an IPv4/IPv6 address"),
    ("hosts/hft-prod-01/port", 0, "hft:hosts.hft-prod-01.port = 0: expected an integer from 1 to 65535"),
    ("hosts/hft-prod-01/port", "22", 'hft:hosts.hft-prod-01.port = "22": expected an integer'),
    ("hosts/hft-prod-01/user", "deploy", 'hft:hosts.hft-prod-01.user = "deploy": expected root'),
    ("hosts/hft-prod-01/hostKey", "", 'hft:hosts.hft-prod-01.hostKey = "": expected the host\'s public key'),
    ("hosts/hft-prod-01/hostKey", "ssh-rsa AAAAB3NzaC1yc2EAAAADAQAB", "type ssh-ed25519 or ecdsa"),
    ("hosts/hft-prod-01/hostKey", "ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQAB", "whose blob is a ssh-ed25519 key"),
    ("hosts/hft-prod-01/hostKey", "ssh-ed25519 not*base64", "whose base64 part decodes"),
    ("hosts/hft-prod-01/hostKey", KEY + "\nssh-ed25519 AAAA", "authorized_keys line"),
    ("hosts/hft-prod-01/container", True, "hft:hosts.hft-prod-01.container = true: expected false in prod"),
    ("hosts/hft-prod-01/colour", 1, "hft:hosts.hft-prod-01.colour: unknown key"),
    ("hosts/hft-prod-01/network/gateway", "10.0.1.1", 'gateway = "10.0.1.1": expected an address inside 10.0.0.0/24'),
    ("hosts/hft-prod-01/network/interface", "eth0; reboot", "expected a network interface name"),
    ("hosts/hft-prod-01/network/mtu", 9000, "hft:hosts.hft-prod-01.network.mtu: unknown key"),
    ("hosts/Bad_Host", {"address": "10.0.0.5"}, 'hft:hosts key = "Bad_Host": expected a host name'),
    ("hosts/hft-prod-02/address", "10.0.0.10", 'hft:hosts.hft-prod-02.address = "10.0.0.10": expected an address of its own'),
    ("placements/app:green", "hft-prod-09", 'hft:placements.app:green = "hft-prod-09": expected a host declared'),
    ("placements/app:purple", "hft-prod-01", 'hft:placements key = "app:purple": expected one of app:blue, app:green, db, monitoring'),
    ("release/live", "green-ish", 'hft:release.live = "green-ish": expected one of blue, green'),
    ("release/green/version", "1.1", 'hft:release.green.version = "1.1": expected a release tag'),
    ("release/green/version", "v1.1.0;reboot", "expected a release tag like v1.2.3"),
    ("baseline/sysctl/kernel.core_pattern", "|/tmp/x", 'hft:baseline.sysctl.kernel.core_pattern = "|/tmp/x": expected a sysctl value'),
    ("baseline/sysctl/vm.swappiness", True, "hft:baseline.sysctl.vm.swappiness = true: expected a sysctl value"),
    ("baseline/sysctl/vm.swappiness", "1\nkernel.x=1", "expected a sysctl value"),
    ("baseline/sysctl/vm swappiness", "1", 'hft:baseline.sysctl key = "vm swappiness": expected a sysctl key'),
    ("baseline/sysctl/net.ipv4.tcp_nodelay", "1", "expected no such key (TCP_NODELAY is a per-socket option"),
    ("baseline/cpuGovernor", "turbo", 'hft:baseline.cpuGovernor = "turbo": expected one of performance'),
    ("baseline/disabledServices", ["cups", "ssh"], "ssh may not be disabled"),
    ("baseline/disabledServices", ["postgresql@15-main"], "postgresql@15-main may not be disabled"),
    ("baseline/disabledServices", ["cups; rm -rf /"], "expected a systemd unit name"),
    ("baseline/limits", [{"domain": "hft_user\n*", "type": "hard", "item": "nofile", "value": "1"}], "expected a user, @group or *"),
    ("baseline/limits", [{"domain": "hft_user", "type": "hard", "item": "nofile", "value": "lots"}], "expected a number, unlimited or infinity"),
    ("baseline/packages", ["git", "curl; reboot"], 'hft:baseline.packages[1] = "curl; reboot": expected a Debian package name'),
    ("baseline/aptUpgrade/requested", "now please", "expected a label"),
    ("postgres/settings/listen_addresses", "*", "hft:postgres.settings.listen_addresses = '*': expected not set here"),
    ("postgres/settings/work_mem", "8MB'\ninclude '/tmp/x", "expected a postgresql.conf value"),
    ("postgres/settings/shared buffers", "1GB", "expected a postgresql.conf parameter name"),
    ("postgres/hba", ["host all all 0.0.0.0/0 trust"], "hft:postgres.hba[0] = \"host all all 0.0.0.0/0 trust\": expected an object"),
    ("postgres/hba", [{"type": "host", "database": "hft_db", "user": "hft_user", "address": "0.0.0.0/0", "method": "trust"}], 'method = "trust": expected one of scram-sha-256'),
    ("postgres/hba", [{"type": "host", "database": "hft_db", "user": "hft_user", "address": "10.0.0.5/8", "method": "scram-sha-256"}], "expected an address range like 10.0.0.5/32 (host bits zero)"),
    ("database/name", "hft-db", 'hft:database.name = "hft-db": expected a lower-case identifier'),
    ("database/user", "hft_user; DROP TABLE x", "expected a lower-case identifier"),
    ("database/backupDir", "/var/backup/../../etc", "expected an absolute path"),
    ("database/passwordLength", 8, "hft:database.passwordLength = 8: expected an integer from 16 to 128"),
    ("service/home", "/", 'hft:service.home = "/": expected an absolute path below /opt or below /srv'),
    ("service/home", "/opt/hft#x", "expected an absolute path below /opt"),
    ("service/home", "/opt", 'hft:service.home = "/opt": expected an absolute path below /opt'),
    ("service/logDir", "/etc", 'hft:service.logDir = "/etc": expected an absolute path below /var/log'),
    ("service/user", "root", 'hft:service.user = "root": expected a non-root user name'),
    ("service/repository", "https://user:token@git.example/hft.git", "expected a git URL without credentials"),
    ("service/repository", "file:///tmp/evil", "expected a git URL"),
    ("service/apiPort", 9100, "hft:service.apiPort = 9100: expected a port no other service of hft-prod-01 uses (taken by monitoring.nodeExporterPort)"),
    ("service/apiPort", 5432, "expected a port no other service of hft-prod-01 uses (taken by postgresql)"),
    ("service/exchanges", [], "hft:service.exchanges = []: expected a list of an exchange name"),
    ("service/exchanges", ["binance", "binance"], "expected no duplicates (repeated: binance)"),
    ("service/strategies", [{"id": "x y"}], "expected a strategy id of letters"),
    ("service/strategies", [{"id": "a", "code": "rm -rf"}], "unknown: code"),
    ("service/unit/description", "HFT\nExecStartPre=+/bin/sh -c id", 'hft:service.unit.description = "HFT\\nExecStartPre=+/bin/sh -c id": expected one line of text'),
    ("service/unit/after", ["network.target postgresql.service"], "unit.after[0] = \"network.target postgresql.service\": expected a systemd unit name"),
    ("service/unit/limitNOFILE", "65536\nUser=root", "expected a number or infinity"),
    ("service/unit/standardOutput", "file:/etc/passwd", "expected one of journal"),
    ("service/unit/syslogIdentifier", "hft system", "expected an identifier"),
    ("service/logDirMode", "0777x", "expected an octal file mode"),
    ("monitoring/scrapeInterval", "fast", 'hft:monitoring.scrapeInterval = "fast": expected a Prometheus duration'),
    ("monitoring/appMetricsPath", "/metrics?x=1", "expected a URL path"),
    ("monitoring/prometheusPort", 8080, "expected a port no other service of hft-prod-01 uses (taken by monitoring.prometheusPort)"),
    ("preflight/requiredOs", "Ubuntu\n22.04", "expected one line of text"),
    ("preflight/minCores", -1, "hft:preflight.minCores = -1: expected an integer from 1 to 4096"),
    ("realtimeKernel/packages", {"debian": []},
     "hft:realtimeKernel.packages.debian = []: expected a list of a Debian package name"),
    ("realtimeKernel/packages", ["linux-image-rt-amd64"], "hft:realtimeKernel.packages = [\"linux-image-rt-amd64\"]: "
                                                          "expected an object of one of debian, ubuntu"),
    ("realtimeKernel/packages", {"fedora": ["kernel-rt"]}, 'hft:realtimeKernel.packages key = "fedora": expected '
                                                           "one of debian, ubuntu"),
    ("realtimeKernel/unamePattern", {"ubuntu": "rt; reboot"}, "expected a uname -r fragment"),
    ("preflight/supportedOs", {"centos": ["7"]}, 'hft:preflight.supportedOs key = "centos": expected one of debian'),
    ("preflight/supportedOs", {"debian": ["bookworm"]}, "expected a VERSION_ID like 12 or 22.04"),
    ("preflight/minBoost", "1.75; reboot", "hft:preflight.minBoost = \"1.75; reboot\": expected a version"),
    ("preflight/dataMount", "/etc", 'hft:preflight.dataMount = "/etc": expected an absolute path at or below /data'),
    ("preflight/minDataGb", 0, "hft:preflight.minDataGb = 0: expected an integer from 1"),
    ("surprise", 1, "hft:surprise: unknown key"),
]


@pytest.mark.parametrize("path,value,expected", BAD, ids=[f"{p}={v!r}"[:60] for p, v, _ in BAD])
def test_a_bad_value_is_refused_naming_key_value_and_what_is_allowed(path, value, expected) -> None:
    found = problems_of(with_(path, value))
    assert any(expected in p for p in found), "\n".join(found)


def test_at_least_forty_distinct_bad_config_cases() -> None:
    assert len({(p, repr(v)) for p, v, _ in BAD}) >= 40


def test_every_problem_is_reported_at_once() -> None:
    values = with_("environment", "production")
    values["baseline"] = {"cpuGovernor": "turbo"}
    values["service"] = {"user": "root"}
    assert len(problems_of(values)) >= 3


def test_hosts_outside_the_lab_need_a_pinned_key() -> None:
    values = stack_values("staging")
    del values["hosts"]["hft-staging-01"]["hostKey"]
    found = "\n".join(problems_of(values))
    assert "hft:hosts.hft-staging-01.hostKey is missing" in found and "ssh-keyscan" in found


def test_missing_exchange_secret_is_named() -> None:
    with pytest.raises(ConfigError) as err:
        check_exchange_keys({"BINANCE_API_KEY": "x"}, ("BINANCE_API_KEY", "BINANCE_API_SECRET"))
    assert "hft:exchangeKeys.BINANCE_API_SECRET is missing" in str(err.value)


def test_a_secret_outside_the_secret_keys_is_refused() -> None:
    assert secret_problems({"exchangeKeys", "sshPrivateKey"}) == []
    (problem,) = secret_problems({"service"})
    assert problem.startswith("hft:service is a secret: expected plain config here")


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_the_committed_placeholders_are_refused_until_replaced(stack: str) -> None:
    doc = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text())["config"]
    found = "\n".join(problems_of({k[4:]: v for k, v in doc.items()}))
    assert "expected the host's real key (this is the committed placeholder" in found
    assert 'hft:service.repository = "https://github.com/company/hft_system.git": expected your hft_system repository' in found


def test_staging_and_prod_state_is_refused_on_the_per_user_cache_directory() -> None:
    from components.config import state_problems
    local = "file:///home/op/.cache/hft-deploy/state"
    (problem,) = state_problems("prod", local, local, allowed=False)
    assert "expected a backend the operators share for prod" in problem and "HFT_ALLOW_LOCAL_STATE=1" in problem
    assert state_problems("prod", local, local, allowed=True) == []
    assert state_problems("prod", "s3://bucket/hft-deploy", local, allowed=False) == []
    assert state_problems("lab", local, local, allowed=False) == []


# ---- conflicts between keys that each pass their own rule: refused at preview, before any host changes

def test_timescaledb_off_with_the_extension_still_listed_is_refused() -> None:
    values = with_("postgres/timescaledb", False)
    (problem,) = problems_of(values)
    assert problem.startswith('hft:database.extensions = ["timescaledb"]: expected no timescaledb while '
                              "hft:postgres.timescaledb is false")
    values["database"] = {"extensionsOptional": True}   # "use it where the server has it": coherent
    assert parse(values).database.extensions == ("timescaledb",)
    values["database"] = {"extensions": []}
    assert parse(values).postgres.timescaledb is False


def test_grafana_listed_as_a_package_while_grafana_is_off_is_refused() -> None:
    values = with_("monitoring/grafana", False)
    values["monitoring"]["packages"] = ["prometheus", "grafana"]
    (problem,) = problems_of(values)
    assert problem.startswith('hft:monitoring.packages = ["prometheus", "grafana"]: expected no grafana while '
                              "hft:monitoring.grafana is false")


def test_timescaledb_is_preloaded_and_a_preload_list_without_it_is_refused() -> None:
    from components.postgres import render_settings
    cfg = parse(stack_values("prod"))
    assert "shared_preload_libraries = 'timescaledb'" in render_settings(cfg.postgres, ["127.0.0.1"]).splitlines()
    found = problems_of(with_("postgres/settings", {"shared_preload_libraries": "pg_stat_statements"}))
    assert found == ["hft:postgres.settings.shared_preload_libraries = 'pg_stat_statements': expected a list that "
                     "includes timescaledb while postgres.timescaledb is true (TimescaleDB must be preloaded)"]
    both = parse(with_("postgres/settings", {"shared_preload_libraries": "pg_stat_statements,timescaledb"}))
    assert "shared_preload_libraries = 'pg_stat_statements,timescaledb'" in render_settings(both.postgres, ["::1"])
    off = parse(stack_values("lab"), inventory=LAB_INVENTORY)
    assert "shared_preload_libraries" not in render_settings(off.postgres, ["127.0.0.1"])


def test_the_rt_kernel_is_chosen_per_os_family_on_the_host() -> None:
    cfg = parse(stack_values("prod"))
    assert cfg.realtime_kernel.packages == {"debian": ("linux-image-rt-amd64", "linux-headers-rt-amd64"),
                                            "ubuntu": ("linux-realtime",)}
    assert cfg.realtime_kernel.env() == {
        "HFT_RT_PACKAGES_DEBIAN": "linux-image-rt-amd64 linux-headers-rt-amd64", "HFT_RT_PACKAGES_UBUNTU": "linux-realtime",
        "HFT_RT_PATTERN_DEBIAN": "-rt", "HFT_RT_PATTERN_UBUNTU": "-realtime"}
    # a stack overrides one family; the other keeps the runbook's
    cfg = parse(with_("realtimeKernel/packages", {"ubuntu": ["linux-lowlatency"]}))
    assert cfg.realtime_kernel.packages["ubuntu"] == ("linux-lowlatency",)
    assert cfg.realtime_kernel.packages["debian"] == ("linux-image-rt-amd64", "linux-headers-rt-amd64")


def test_preflight_settings_are_the_runbooks() -> None:
    pre = parse(stack_values("prod")).preflight
    assert (pre.min_cores, pre.min_ram_gb, pre.min_root_gb, pre.min_data_gb, pre.data_mount) == (32, 128, 100, 1800,
                                                                                                 "/data")
    assert pre.supported_os == {"debian": ("12",), "ubuntu": ("22.04",)} and pre.enforce is True
    # Boost: what the runbook's own 3.3 step 2 installs on its Ubuntu 22.04 (libboost-all-dev 1.74)
    assert pre.min_boost == "1.74" and pre.min_openssl == "3.0"
