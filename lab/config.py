"""Fixed facts of the lab (names, addresses, bridge) and the paths it keeps state in.

Addresses are fixed so that the stack's configuration and pinned host keys stay valid across
``destroy``/``up`` cycles; only 198.18.0.0/24 (RFC 2544 benchmarking space, free on these
machines) is ever used. State lives outside the work tree: the lab home holds per-host roots,
keys and logs; the image cache may be shared between lab homes so that tests reuse a warm image;
machine-wide runtime state (bridge and proxy, which every lab home shares) lives in /run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

BRIDGE = "hftlab0"
GATEWAY = "198.18.0.1"
PREFIX_LEN = 24
SUBNET = "198.18.0.0/24"
PROXY_PORT = 3128
PROXY_URL = f"http://{GATEWAY}:{PROXY_PORT}"
SUITE = "bookworm"

HOSTS: dict[str, str] = {
    "hft-dev-01": "198.18.0.11",
    "hft-staging-01": "198.18.0.12",
    "hft-prod-01": "198.18.0.13",
    "hft-prod-02": "198.18.0.14",
    "hft-canary-01": "198.18.0.15",
    "hft-dr-01": "198.18.0.16",
    "hft-eu-west-01": "198.18.0.17",
    "hft-asia-east-01": "198.18.0.18",
}
# Hosts of kind "vm" (QEMU, a real kernel of their own; lab/vm.py). Kept out of HOSTS, the
# container fleet that a bare `python3 -m lab up` starts: a VM is opt-in, since it costs a
# boot of a minute or more under TCG and 2 GiB of RAM.
VM_HOSTS: dict[str, str] = {
    "hft-rt-01": "198.18.0.19",
}
ALL_HOSTS: dict[str, str] = {**HOSTS, **VM_HOSTS}


def kind(name: str) -> str:
    """"vm" or "container" (the stack reads it to decide whether kernel steps run)."""
    return "vm" if name in VM_HOSTS else "container"


@dataclass(frozen=True)
class Paths:
    """Where one lab home keeps its state; built from the environment by :func:`paths`."""

    home: Path
    image_cache: Path
    run: Path

    @property
    def key(self) -> Path:
        return self.home / "ssh" / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.home / "ssh" / "known_hosts"

    @property
    def archives(self) -> Path:
        return self.home / "apt-archives"

    def host_dir(self, name: str) -> Path:
        return self.home / "hosts" / name


def paths() -> Paths:
    """Resolve the lab home (HFT_LAB_HOME) and image cache (HFT_LAB_IMAGE_CACHE)."""
    default_home = Path.home() / ".cache" / "hft-deploy" / "lab"
    home = Path(os.environ.get("HFT_LAB_HOME") or default_home).absolute()
    cache = Path(os.environ.get("HFT_LAB_IMAGE_CACHE") or home / "images").absolute()
    run = Path("/run/hftlab")  # machine-wide on purpose: the bridge and proxy are too
    return Paths(home=home, image_cache=cache, run=run)
