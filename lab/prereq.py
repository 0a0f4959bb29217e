"""Refuse to start, before touching anything, when the lab cannot work on this machine.

Half-built labs (a bridge but no proxy, a mounted overlay but no container) are worse than a
clear refusal, so the verbs that change the machine check everything up front and name the
Debian package that provides each missing tool.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lab.errors import LabError

# binary -> Debian package that provides it (all listed in deps/apt/lab.txt)
BINARIES: dict[str, str] = {
    "systemd-nspawn": "systemd-container",
    "systemctl": "systemd",
    "debootstrap": "debootstrap",
    "tinyproxy": "tinyproxy",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "ip": "iproute2",
    "mount": "mount",
    "umount": "mount",
}
# Only for hosts of kind vm (building the VM image, running QEMU); also in deps/apt/lab.txt.
VM_BINARIES: dict[str, str] = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "mkfs.ext4": "e2fsprogs",
    "sfdisk": "fdisk",
    "unshare": "util-linux",
    "chroot": "coreutils",
}
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")


def problems(need_root: bool = True, vm: bool = False) -> list[str]:
    """Human-readable list of what is missing; empty when the lab can run (``vm``: VMs too)."""
    out: list[str] = []
    if need_root and os.geteuid() != 0:
        out.append("not running as root (the lab mounts filesystems, creates a bridge and "
                   "starts containers): run it with sudo or as root")
    missing: dict[str, list[str]] = {}
    for binary, pkg in (BINARIES | (VM_BINARIES if vm else {})).items():
        if shutil.which(binary) is None:
            missing.setdefault(pkg, []).append(binary)
    for pkg, bins in sorted(missing.items()):
        out.append(f"{', '.join(bins)} not found: install Debian package {pkg} "
                   "(tools/install-apt-deps.sh deps/apt/lab.txt)")
    if not KEYRING.exists():
        out.append(f"{KEYRING} missing: install Debian package debian-archive-keyring")
    fs = Path("/proc/filesystems").read_text()
    if "overlay" not in fs:
        out.append("kernel has no overlay filesystem (try `modprobe overlay`)")
    if vm and not Path("/dev/net/tun").exists():
        out.append("/dev/net/tun missing (VMs attach to the bridge through a tap device)")
    return out


def require(need_root: bool = True, vm: bool = False) -> None:
    found = problems(need_root, vm)
    if found:
        raise LabError("check prerequisites", "; ".join(found),
                       "fix the above, then run the verb again (nothing was changed)")
