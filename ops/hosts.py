"""Commands on a stack's hosts over SSH, with the host key the stack pins (never trust on first use)."""
from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from components.server import Host


def run(host: Host, script: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``script`` (bash, on stdin) as the stack's SSH user on ``host``. Secrets the script
    needs it reads on the host (the API token from the service's .env); none travel from here."""
    if not host.host_key:
        raise SystemExit(f"{host.name}: no pinned host key in the stack config; refusing to connect")
    if not host.private_key_file:
        raise SystemExit(f"{host.name}: the on-call commands need privateKeyFile (the deploy key file)")
    with tempfile.TemporaryDirectory(prefix="hft-ops-") as tmp:
        known = Path(tmp) / "known_hosts"
        name = host.address if host.port == 22 else f"[{host.address}]:{host.port}"
        known.write_text(f"{name} {host.host_key}\n")
        os.chmod(known, 0o600)
        cmd = ["ssh", "-i", str(Path(host.private_key_file).expanduser()), "-p", str(host.port),
               "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
               "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=10", f"{host.user}@{host.address}", "bash -s"]
        env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
        return subprocess.run(cmd, input=script, capture_output=True, text=True, timeout=timeout, env=env)
