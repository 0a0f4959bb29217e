"""Server: one machine, reached over SSH with its host key pinned (runbook 2.2, 3.1).

Before anything on the host is changed, the preflight reads what it can of runbook 2.2 (OS,
cores, RAM, disk, library versions) and reports it; where ``preflight.enforce`` is set (prod)
a host below the requirement stops the update. Then the hostname, a marked block of
/etc/hosts naming every host of the stack, and, where the host has a ``network`` section,
its static netplan file (applied with ``netplan apply``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi
import yaml

from components.config import Host, Preflight
from components.remote import Step, connection
from components.reports import report_from_stdout


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


@dataclass
class ServerArgs:
    host: Host
    all_hosts: Sequence[Host]
    preflight: Preflight
    private_key: Optional[pulumi.Input[str]]


class Server(pulumi.ComponentResource):
    """The SSH connection every other component of this host uses, and the host's identity."""

    preflight_report: pulumi.Output[dict]
    ready: pulumi.Resource

    def __init__(self, name: str, args: ServerArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("hft:host:Server", name, None, opts)
        host, pre = args.host, args.preflight
        self.host = host
        self.connection = connection(host, args.private_key)
        preflight = Step(f"{name}-preflight", "preflight.sh", {
            "HFT_MIN_CORES": str(pre.min_cores), "HFT_MIN_RAM_GB": str(pre.min_ram_gb),
            "HFT_MIN_DISK_GB": str(pre.min_disk_gb), "HFT_REQUIRED_OS": pre.required_os,
            "HFT_ENFORCE": "1" if pre.enforce else "0",
        }).create(self.connection, self)
        hosts_block = "".join(f"{h.address} {h.name}\n" for h in args.all_hosts)
        files = {"hosts.block": hosts_block}
        if host.network:
            files["netplan.yaml"] = render_netplan(host)
        self.ready = Step(f"{name}-identity", "server.sh", {
            "HFT_HOSTNAME": host.name,
            "HFT_APPLY_NETWORK": "1" if host.network else "0",
        }, files).create(self.connection, self, depends_on=[preflight])
        self.preflight_report = report_from_stdout(preflight.stdout, "HFT_PREFLIGHT_REPORT")
        self.register_outputs({"address": host.address, "preflight": self.preflight_report})
