"""Stack config: the committed stacks parse; bad values are reported with key, value and what is allowed."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from components.config import ConfigError, check_exchange_keys, parse

REPO = Path(__file__).resolve().parent.parent

LAB_INVENTORY = {"hosts": {"hft-prod-01": {"address": "198.18.0.13", "port": 22, "user": "root",
                                           "private_key": "/nonexistent/key", "host_key": "ssh-ed25519 AAAA"}}}


def stack_values(stack: str) -> dict:
    doc = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text())["config"]
    return {k[4:]: v for k, v in doc.items() if not isinstance(v, dict) or "secure" not in v}


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_committed_stacks_parse_with_runbook_values(stack: str) -> None:
    cfg = parse(stack_values(stack))
    assert cfg.environment == stack
    assert cfg.baseline.sysctl["vm.nr_hugepages"] == "4096"
    assert cfg.baseline.sysctl["net.core.rmem_max"] == "134217728"
    assert ("hft_user", "hard", "memlock", "unlimited") in [(x.domain, x.type, x.item, x.value) for x in cfg.baseline.limits]
    assert cfg.service.unit.restart == "on-failure" and cfg.service.unit.restart_sec == 10
    assert cfg.monitoring.scrape_interval == "1s"
    assert not any(h.container for h in cfg.hosts)
    (host,) = cfg.hosts
    assert host.network and host.network.gateway == "10.0.0.1" and host.network.prefix == 24


def test_lab_stack_takes_hosts_from_the_inventory() -> None:
    cfg = parse(stack_values("lab"), inventory=lambda: LAB_INVENTORY)
    (host,) = cfg.hosts
    assert host.address == "198.18.0.13" and host.container and host.host_key == "ssh-ed25519 AAAA"
    assert cfg.preflight.enforce is False


def problems_of(values: dict) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse(values)
    return err.value.problems


def test_every_problem_names_key_value_and_what_is_allowed() -> None:
    values = stack_values("prod")
    values["hosts"] = {"hft-prod-01": {"address": "10.0.0.300", "roles": ["app", "db", "monitoring"], "colour": 1}}
    values["baseline"] = {"sysctl": {"vm.swappiness": True}, "cpuGovernor": "turbo"}
    values["service"] = {"version": "1.0"}
    problems = problems_of(values)
    text = "\n".join(problems)
    assert 'hft:hosts.hft-prod-01.address = "10.0.0.300": expected an IPv4/IPv6 address' in text
    assert "hft:hosts.hft-prod-01.colour: unknown key" in text
    assert "hft:baseline.sysctl.vm.swappiness = true" in text
    assert 'hft:baseline.cpuGovernor = "turbo": expected one of performance' in text
    assert 'hft:service.version = "1.0": expected a string matching' in text


def test_container_hosts_are_refused_in_prod() -> None:
    values = stack_values("prod")
    values["hosts"] = {"hft-prod-01": {"address": "10.0.0.10", "container": True}}
    assert any("container" in p and "false in prod" in p for p in problems_of(values))


def test_missing_exchange_secret_is_named() -> None:
    with pytest.raises(ConfigError) as err:
        check_exchange_keys({"BINANCE_API_KEY": "x"}, ("BINANCE_API_KEY", "BINANCE_API_SECRET"))
    assert "hft:exchangeKeys.BINANCE_API_SECRET is missing" in str(err.value)


def test_network_values_are_checked() -> None:
    values = stack_values("prod")
    values["hosts"] = {"hft-prod-01": {"address": "10.0.0.10", "network": {"gateway": "10.0.0.256", "mtu": 9000}}}
    text = "\n".join(problems_of(values))
    assert 'hft:hosts.hft-prod-01.network.gateway = "10.0.0.256": expected an IP address' in text
    assert "hft:hosts.hft-prod-01.network.mtu: unknown key" in text
