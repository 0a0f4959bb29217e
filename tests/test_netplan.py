"""Issue 14 item 3: a wrong network config cannot cut the deployer off (confirm or revert).

Unit part (no host): the netplan file rendered from a host's ``network`` config, and the two
steps that apply it (the identity step arms the revert; a second command, i.e. a new SSH
connection, confirms it).

Real part, on the lab host hft-asia-east-01 (a systemd-nspawn container with its own network
namespace, systemd-networkd and sshd): server.sh and netplan_confirm.sh run as the components
run them (the staged ``script_command`` text over SSH, each its own connection), with the real
netplan.io and systemd-networkd, for
- a good config: applied, confirmed from a new connection, the timer cancelled, still in
  place after the revert time;
- a config that passes preview but cuts the deployer off (a /30 that leaves the deployer
  outside the host's subnet, behind a gateway that does not exist): the host loses the
  deployer, restores its previous network by itself, and the confirmation fails saying so
  and naming the key;
- a file netplan refuses: nothing changes.
What the container cannot do: udev cannot trigger in it (/sys is read-only), so the test host
gets a no-op ``udevadm`` in /usr/local/sbin (netplan apply calls ``udevadm trigger``); the lab's
own networkd file for host0 is moved aside so that netplan's file is the one networkd uses, as
on a server installed with netplan. Everything else (netplan generate/apply, networkd, the
transient units, the timer, the SSH sessions) is the real thing.

    venv/bin/python -m pytest tests/test_netplan.py
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from components.remote import script_command
from components.server import NETPLAN_REVERT_SECONDS, Host, NetworkSettings, netplan_confirm_step, render_netplan
from tests.lab_stack import lab
from tests.pulumi_cli import REPO
from tests.test_components_unit import commands, run_stack

LAB_HOST = "hft-asia-east-01"
REVERT = 30   # the smallest the script accepts: keeps the bad case short
pytestmark = pytest.mark.timeout(1800)


def _host(prefix: int = 24, gateway: str = "10.0.0.1", interface: str = "eth0", address: str = "10.0.0.20",
          nameservers: tuple[str, ...] = ("8.8.8.8", "8.8.4.4")) -> Host:
    return Host("hft-staging-01", address, 22, "root", False, None, None,
                NetworkSettings(interface, prefix, gateway, nameservers))


# ------------------------------------------------------------------------------ unit

def test_rendered_netplan_is_the_runbook_static_config() -> None:
    text = render_netplan(_host())
    assert text.startswith("# Managed by hft-deploy")
    assert yaml.safe_load(text) == {"network": {"version": 2, "ethernets": {"eth0": {
        "addresses": ["10.0.0.20/24"], "routes": [{"to": "default", "via": "10.0.0.1"}],
        "nameservers": {"addresses": ["8.8.8.8", "8.8.4.4"]}}}}}
    assert "nameservers" not in yaml.safe_load(render_netplan(_host(nameservers=())))["network"]["ethernets"]["eth0"]


def test_confirm_step_follows_the_rendered_file() -> None:
    a, b = netplan_confirm_step(_host()), netplan_confirm_step(_host(gateway="10.0.0.254"))
    assert a.env["HFT_NETPLAN_SHA256"] == hashlib.sha256(render_netplan(_host()).encode()).hexdigest()
    assert a.env["HFT_NETWORK_KEY"] == "hft:hosts.hft-staging-01.network"
    assert a.fingerprint != b.fingerprint   # a changed network re-runs the confirmation
    assert a.fingerprint == netplan_confirm_step(_host()).fingerprint


def test_prod_applies_the_network_confirm_or_revert(tmp_path) -> None:
    mocks, d = run_stack("prod", tmp_path)
    cmds = commands(mocks)
    server = d.fleet.servers["hft-prod-01"]
    assert server.identity_step.env["HFT_NETPLAN_REVERT_SECONDS"] == str(NETPLAN_REVERT_SECONDS)
    confirm = server.network_confirm_step
    assert confirm is not None and confirm.script == "netplan_confirm.sh"
    assert confirm.env["HFT_NETPLAN_SHA256"] == hashlib.sha256(
        server.identity_step.files["netplan.yaml"].encode()).hexdigest()
    assert "hft-prod-01-network-confirm" in cmds
    # everything after the server waits for the confirmation, not only for the apply
    assert server.ready is not None and server.ready._name == "hft-prod-01-network-confirm"


def test_lab_container_hosts_have_no_network_steps(tmp_path) -> None:
    mocks, d = run_stack("lab", tmp_path)
    assert d.fleet.servers["hft-prod-01"].network_confirm_step is None
    assert not [n for n in commands(mocks) if n.endswith("network-confirm")]


# ------------------------------------------------------------------------------ lab host

class LabHost:
    def __init__(self, name: str) -> None:
        inv = json.loads(lab("inventory").stdout)["hosts"][name]
        self.name, self.address = name, inv["address"]

    def ssh(self, command: str, timeout: float = 120, check: bool = True):
        """One new SSH connection (OpenSSH, no keepalives: like pulumi-command's, a session
        the network froze resumes when the network comes back), stdin empty."""
        proc = subprocess.run([sys.executable, "-m", "lab", "ssh", self.name, command], cwd=REPO,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"on {self.name}: `{command[:200]}` exited {proc.returncode}:\n{proc.stderr}{proc.stdout}")
        return proc

    def out(self, command: str) -> str:
        return self.ssh(command).stdout.strip()

    def step(self, script: str, env: dict[str, str], files: dict[str, str] | None = None, step: str = "",
             timeout: float = 600):
        """The staged text a component sends, over a new SSH connection; (rc, stdout+stderr, seconds)."""
        t0 = time.monotonic()
        proc = self.ssh(script_command(script, env, files, step=step or script.removesuffix(".sh")),
                        timeout=timeout, check=False)
        return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - t0


INSTALLER = """network:
  version: 2
  renderer: networkd
  ethernets:
    host0:
      addresses: [{address}/24]
"""


@pytest.fixture(scope="module")
def host() -> Iterator[LabHost]:
    lab("destroy", LAB_HOST, check=False)
    lab("up", LAB_HOST, timeout=1500)
    try:
        h = LabHost(LAB_HOST)
        # The host as a server installed with netplan: netplan.io (and udev), its installer
        # config for host0 in /etc/netplan, the lab's own networkd file for host0 moved aside.
        # (taking turns on the package cache the lab hosts share, as lib.sh's apt_get does)
        h.ssh("touch /var/cache/apt/archives/hft-deploy.lock && DEBIAN_FRONTEND=noninteractive flock -w 900 "
              "/var/cache/apt/archives/hft-deploy.lock apt-get install -y -q --no-install-recommends "
              "-o DPkg::Lock::Timeout=300 netplan.io udev >/tmp/apt.log 2>&1 || { tail -20 /tmp/apt.log; exit 1; }",
              timeout=1500)
        h.ssh("printf '#!/bin/sh\\n# lab container only: /sys is read-only, udev cannot trigger here\\nexit 0\\n' "
              ">/usr/local/sbin/udevadm && chmod 755 /usr/local/sbin/udevadm")
        h.ssh(f"mkdir -p /etc/netplan && cat >/etc/netplan/00-installer-config.yaml <<'EOF'\n"
              f"{INSTALLER.format(address=h.address)}EOF\n"
              "chmod 600 /etc/netplan/00-installer-config.yaml && mv /etc/systemd/network/10-host0.network /root/ "
              "&& netplan apply")
        assert "10-netplan-host0.network" in h.out("ls /run/systemd/network")
        yield h
    finally:
        lab("destroy", LAB_HOST, check=False)


def settled(read, seconds: float = 20):
    """What ``read()`` returns once it stops changing (networkd configures asynchronously)."""
    last, deadline = read(), time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(2)
        now = read()
        if now == last:
            return now
        last = now
    return last


def network_files(host: LabHost, address: str, prefix: int, gateway: str) -> dict[str, str]:
    h = Host(LAB_HOST, address, 22, "root", False, None, None,
             NetworkSettings("host0", prefix, gateway, ("198.18.0.1",)))
    return {"hosts.block": f"{address} {LAB_HOST}\n", "netplan.yaml": render_netplan(h)}


def run_identity(host: LabHost, files: dict[str, str], step: str):
    env = {"HFT_HOSTNAME": LAB_HOST, "HFT_APPLY_NETWORK": "1", "HFT_NETPLAN_REVERT_SECONDS": str(REVERT)}
    return host.step("server.sh", env, files, step=step)


def run_confirm(host: LabHost, files: dict[str, str], step: str):
    env = {"HFT_NETPLAN_SHA256": hashlib.sha256(files["netplan.yaml"].encode()).hexdigest(),
           "HFT_NETWORK_KEY": f"hft:hosts.{LAB_HOST}.network"}
    return host.step("netplan_confirm.sh", env, step=step)


def test_a_good_network_is_applied_and_confirmed_from_a_new_connection(host: LabHost) -> None:
    files = network_files(host, host.address, 24, "198.18.0.1")
    rc, out, secs = run_identity(host, files, "nw-good")
    assert rc == 0, out
    assert "changed: network applied" in out
    assert host.out("systemctl is-active hft-netplan-revert.timer") == "active"   # armed until confirmed
    assert "Gateway=198.18.0.1" in host.out("cat /run/systemd/network/10-netplan-host0.network")
    assert settled(lambda: host.out("ip route show default")).startswith("default via 198.18.0.1")
    rc, out, _ = run_confirm(host, files, "nw-good-confirm")
    assert rc == 0, out
    assert "changed: network confirmed over a new connection" in out
    assert host.ssh("systemctl is-active hft-netplan-revert.timer", check=False).stdout.strip() != "active"
    time.sleep(REVERT + 5)  # past the revert time: nothing reverts
    assert host.out("cat /etc/netplan/00-installer-config.yaml") == files["netplan.yaml"].strip()
    assert host.out("cat /var/lib/hft-deploy/netplan/state").startswith("confirmed ")
    # a second run of each changes nothing
    rc, out, _ = run_identity(host, files, "nw-good-2")
    assert rc == 0 and "ok: network:" in out and "changed: network" not in out, out
    rc, out, _ = run_confirm(host, files, "nw-good-confirm-2")
    assert rc == 0 and "changed:" not in out, out


def test_a_network_that_cuts_the_deployer_off_reverts_by_itself(host: LabHost) -> None:
    good = host.out("cat /etc/netplan/00-installer-config.yaml")
    routes = host.out("ip -4 route show")
    # passes preview (the gateway is inside 198.18.0.16/30) but leaves the deployer
    # (198.18.0.1) outside the host's subnet, behind a gateway that does not exist
    files = network_files(host, host.address, 30, "198.18.0.17")
    t0 = time.monotonic()
    rc, out, secs = run_identity(host, files, "nw-bad")
    # this session froze when the network changed and came back with the old network
    assert secs >= REVERT, (secs, out)
    rc2, out2, _ = run_confirm(host, files, "nw-bad-confirm")
    took = time.monotonic() - t0
    assert rc2 != 0, out2
    assert "cut the deployer off" in out2 and f"hft:hosts.{LAB_HOST}.network" in out2, out2
    assert "Traceback" not in out + out2
    assert host.out("cat /etc/netplan/00-installer-config.yaml") == good   # the previous file is back
    assert settled(lambda: host.out("ip -4 route show")) == routes            # and the routes with it
    assert host.out("cat /var/lib/hft-deploy/netplan/state").startswith("reverted ")
    print(f"\nbad network: identity step {secs:.0f} s (rc {rc}), reverted and refused after {took:.0f} s")


def test_a_file_netplan_refuses_changes_nothing(host: LabHost) -> None:
    before = host.out("cat /etc/netplan/00-installer-config.yaml")
    files = {"hosts.block": f"{host.address} {LAB_HOST}\n",
             "netplan.yaml": "network:\n  version: 2\n  ethernets:\n    host0:\n      addresses: [not-an-address]\n"}
    rc, out, _ = run_identity(host, files, "nw-refused")
    assert rc != 0 and "netplan refuses the rendered network config (nothing changed)" in out, out
    assert host.out("cat /etc/netplan/00-installer-config.yaml") == before
    assert host.ssh("systemctl is-active hft-netplan-revert.timer", check=False).stdout.strip() != "active"
