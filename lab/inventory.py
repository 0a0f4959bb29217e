"""The machine-readable description of the lab that the stack (and the tests) consume.

The stack connects with pulumi-command, whose ``connection.host_key`` wants the host's public
key as an authorized_keys-format line, so that is what ``host_key`` holds; every host that has
been created is listed, with ``running`` saying whether its container or VM is up now, and
``kind`` ("container" or "vm") saying whether kernel-level steps can take effect on it; a VM
also says which QEMU accelerator ("kvm" or "tcg") it was last started with.
"""

from __future__ import annotations

from typing import Any

from lab import config, hosts, vm
from lab.config import Paths


def build(p: Paths) -> dict[str, Any]:
    out: dict[str, Any] = {"bridge": config.BRIDGE, "gateway": config.GATEWAY,
                           "apt_proxy": config.PROXY_URL, "hosts": {}}
    for name in hosts.created(p):
        h = out["hosts"][name] = {
            "address": config.ALL_HOSTS[name], "port": 22, "user": "root",
            "private_key": str(p.key), "host_key": hosts.host_key(p, name),
            "running": hosts.running_pid(p, name) is not None, "kind": config.kind(name),
        }
        if h["kind"] == "vm":
            h["accel"] = vm.started_with(p, name).get("accel")
    return out
