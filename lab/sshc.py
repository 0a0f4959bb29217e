"""SSH to lab hosts with the lab's own key and pinned host keys (StrictHostKeyChecking=yes).

Pinning each host's key is what the stack does too (pulumi-command's ``host_key``), so the lab
generates one key pair for the operator once and one ed25519 host key per host on its first
``up``, and keeps a known_hosts file in the lab home listing exactly those keys.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from lab.config import Paths
from lab.sysutil import run


def ensure_keypair(p: Paths) -> Path:
    """The lab's client key (ed25519, mode 600), generated on first use."""
    if not p.key.exists():
        p.key.parent.mkdir(parents=True, exist_ok=True)
        p.key.parent.chmod(0o700)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hft-lab", "-f", str(p.key)],
            "generate lab SSH key")
    p.key.chmod(0o600)
    return p.key


def write_known_hosts(p: Paths, keys: dict[str, tuple[str, str]]) -> None:
    """Rewrite known_hosts from {name: (address, "ssh-ed25519 AAAA...")}."""
    p.known_hosts.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{name},{addr} {key}\n" for name, (addr, key) in sorted(keys.items())]
    tmp = p.known_hosts.with_suffix(".tmp")
    tmp.write_text("".join(lines))
    tmp.replace(p.known_hosts)


def argv(p: Paths, address: str, command: list[str], connect_timeout: int = 5,
         tty: bool = False) -> list[str]:
    return ["ssh", "-i", str(p.key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={p.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", f"ConnectTimeout={connect_timeout}",
            "-o", "LogLevel=ERROR", "-t" if tty else "-T", "-p", "22", f"root@{address}",
            "--", *command]


def system_state(p: Paths, address: str, timeout: float = 10) -> tuple[bool, str]:
    """(SSH answered, ``systemctl is-system-running`` output) for one host."""
    try:
        proc = subprocess.run(argv(p, address, ["systemctl", "is-system-running"], 2),
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, "ssh timeout"
    if proc.returncode == 255:
        return False, (proc.stderr.strip().splitlines() or ["ssh failed"])[-1]
    return True, proc.stdout.strip() or "unknown"
