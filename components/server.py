"""Server: one machine, reached over SSH with its host key pinned (runbook 2.2, 3.1).

Nothing here runs before every host's preflight (``components/preflight.py``) has passed: the
first change on any host waits for all of them. Then the hostname, a marked block of
/etc/hosts naming every host of the stack, and, where the host has a ``network`` section,
its static netplan file, applied confirm-or-revert: the host restores its previous network by
itself unless a new SSH connection (the ``<host>-network-confirm`` step) confirms the new one
within ``NETPLAN_REVERT_SECONDS``.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import pulumi
import yaml

from components.reader import BOOL, HOSTNAME, IP, IDENT, ListOf, Rule, Section, integer, pattern, setting
from components.preflight import Preflight
from components.remote import Step, connection

# Host key types OpenSSH (>= 8.8) still offers for a host; a pinned ssh-rsa key fails there with
# "no common algorithm for host key" because the SSH library offers only ssh-rsa for it.
HOST_KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521")


def _host_key(v: Any) -> bool | str:
    """An authorized_keys-format public key line whose blob parses and names its own type."""
    if not isinstance(v, str) or "\n" in v:
        return False
    parts = v.split()
    if len(parts) < 2 or parts[0] not in HOST_KEY_TYPES:
        return False
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        return "a host key whose base64 part decodes (this one does not)"
    n = int.from_bytes(blob[:4], "big") if len(blob) >= 4 else 0
    if blob[4:4 + n].decode(errors="replace") != parts[0]:
        return f"a host key whose blob is a {parts[0]} key (this blob says otherwise: a truncated or pasted-wrong key)"
    return True


HOST_KEY = Rule("the host's public key as one authorized_keys line, type " + " or ".join(HOST_KEY_TYPES)
                + " (get it with `ssh-keyscan -t ed25519 HOST`)", _host_key)


@dataclass(frozen=True)
class NetworkSettings:
    """Static addressing of runbook 3.1 step 3, rendered to netplan."""
    interface: str = setting("interface", pattern(r"[a-z][a-z0-9]{0,14}", "a network interface name"),
                             "interface the host's address is configured on", "3.1 step 3")
    prefix: int = setting("prefix", integer(1, 128), "prefix length of the host's address", "3.1 step 3")
    gateway: str = setting("gateway", IP, "default gateway (inside address/prefix)", "3.1 step 3")
    nameservers: tuple[str, ...] = setting("nameservers", ListOf(IP), "DNS servers", "3.1 step 3")


@dataclass(frozen=True)
class HostSettings:
    """One machine of the stack: how to reach it and what kind of host it is."""
    address: str = setting("address", IP, "the address the deployer and the other hosts reach it on", "3.1")
    port: int = setting("port", integer(1, 65535), "SSH port")
    user: str = setting("user", pattern(r"root", "root (the scripts run as root; a deploy user with sudo "
                                                "is not supported yet)"), "SSH user")
    host_key: Optional[str] = setting("hostKey", HOST_KEY, "pinned SSH host key; required outside the lab",
                                      optional=True, lab="from `python3 -m lab inventory`")
    private_key_file: Optional[str] = setting(
        "privateKeyFile", pattern(r"[~/][A-Za-z0-9._/-]*", "a path to a private key file"),
        "deploy key file; without it the secret hft:sshPrivateKey is used", optional=True,
        lab="from `python3 -m lab inventory`")
    container: bool = setting("container", BOOL, "a container sharing another kernel: kernel-level steps "
                              "(sysctl apply, governor, hugepages, RT kernel, netplan) are skipped and reported so",
                              lab="true for container lab hosts")
    network: Optional[NetworkSettings] = setting("network", Section(NetworkSettings),
                                                 "static network (netplan)", "3.1 step 3", optional=True)


@dataclass(frozen=True)
class Host:
    """A host as the rest of the program sees it: its name and its settings."""
    name: str
    address: str
    port: int
    user: str
    container: bool
    host_key: Optional[str]
    private_key_file: Optional[str]
    network: Optional[NetworkSettings] = None

    @classmethod
    def of(cls, name: str, s: HostSettings) -> "Host":
        return cls(name, s.address, s.port, s.user, s.container, s.host_key, s.private_key_file, s.network)


def host_problems(name: str, s: HostSettings, environment: str) -> list[str]:
    """Rules across a host's keys (each key alone has passed its own rule)."""
    where = f"hft:hosts.{name}"
    out = []
    if environment != "lab" and not s.host_key:
        out.append(f"{where}.hostKey is missing: expected {HOST_KEY.allowed} (outside the lab every host's "
                   "key is pinned; without one any machine answering on the address gets the secrets)")
    if s.host_key and "PLACEHOLDER" in s.host_key:
        out.append(f"{where}.hostKey = {s.host_key.split()[1][:24]!r}...: expected the host's real key (this is "
                   "the committed placeholder; get the key with `ssh-keyscan -t ed25519 HOST` and check it out of band)")
    if s.container and environment == "prod":
        out.append(f"{where}.container = true: expected false in prod (kernel-level steps cannot be skipped)")
    if s.network is not None:
        if s.container:
            out.append(f"{where}.network = (set): expected no network section on a container host "
                       "(its address belongs to the lab)")
        else:
            try:
                subnet = ipaddress.ip_interface(f"{s.address}/{s.network.prefix}").network
                if ipaddress.ip_address(s.network.gateway) not in subnet:
                    out.append(f"{where}.network.gateway = \"{s.network.gateway}\": expected an address inside "
                               f"{subnet} (the host's address/prefix)")
            except ValueError:
                out.append(f"{where}.network.prefix = {s.network.prefix}: expected a prefix valid for {s.address}")
    return out


def render_netplan(host: Host) -> str:
    """Runbook 3.1 step 3's netplan file, from the host's network config."""
    net = host.network
    assert net is not None
    interface: dict = {"addresses": [f"{host.address}/{net.prefix}"],
                       "routes": [{"to": "default", "via": net.gateway}]}
    if net.nameservers:
        interface["nameservers"] = {"addresses": list(net.nameservers)}
    doc = {"network": {"version": 2, "ethernets": {net.interface: interface}}}
    return "# Managed by hft-deploy (runbook 3.1 step 3).\n" + yaml.safe_dump(doc, sort_keys=False)


# How long a host waits, after `netplan apply`, for a new SSH connection to confirm the new
# network before it restores its previous one by itself (components/scripts/server.sh).
NETPLAN_REVERT_SECONDS = 120


def netplan_confirm_step(host: Host) -> Step:
    """The step that confirms a host's new network over a new connection (netplan_confirm.sh).

    Its text carries the digest of the rendered file, so it runs again exactly when the file
    the identity step applies changes."""
    digest = hashlib.sha256(render_netplan(host).encode()).hexdigest()
    return Step(f"{host.name}-network-confirm", "netplan_confirm.sh",
                {"HFT_NETPLAN_SHA256": digest, "HFT_NETWORK_KEY": f"hft:hosts.{host.name}.network"},
                lock="netplan")


@dataclass
class ServerArgs:
    host: Host
    """The machine: address, SSH user and pinned host key."""
    all_hosts: Sequence[Host]
    """Every host of the stack, for the /etc/hosts block."""
    preflights: Sequence[Preflight]
    """Every host's preflight: nothing on this host changes before all of them have passed."""
    private_key: Optional[pulumi.Input[str]]
    """The deploy key (secret)."""


class Server(pulumi.ComponentResource):
    """The SSH connection every other component of this host uses, and the host's identity."""

    preflight_report: pulumi.Output[dict]
    ready: pulumi.Resource

    def __init__(self, name: str, args: ServerArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("hft:host:Server", name, None, opts)
        host = args.host
        self.host = host
        self.connection = connection(host, args.private_key)
        own = next(p for p in args.preflights if p.host.name == host.name)
        self.preflight_step = own.preflight_step
        files = {"hosts.block": "".join(f"{h.address} {h.name}\n" for h in args.all_hosts)}
        env = {"HFT_HOSTNAME": host.name, "HFT_APPLY_NETWORK": "1" if host.network else "0"}
        if host.network:
            files["netplan.yaml"] = render_netplan(host)
            env["HFT_NETPLAN_REVERT_SECONDS"] = str(NETPLAN_REVERT_SECONDS)
        self.identity_step = Step(f"{name}-identity", "server.sh", env, files)
        self.ready = self.identity_step.create(self.connection, self,
                                               depends_on=[p.step for p in args.preflights])
        self.network_confirm_step: Optional[Step] = None
        if host.network:
            # Confirm-or-revert: a command of its own is a new SSH connection, made after the
            # identity step's apply finished; without it the host restores its old network.
            self.network_confirm_step = netplan_confirm_step(host)
            self.ready = self.network_confirm_step.create(self.connection, self, depends_on=[self.ready])
        self.preflight_report = own.report
        self.register_outputs({"address": host.address, "preflight": self.preflight_report})
