"""Helpers for the lab-stack scenarios: a private copy of the project, the lab host, SSH checks."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from tests.pulumi_cli import REPO, Pulumi

PROJECT_PARTS = ["Pulumi.yaml", "Pulumi.lab.yaml", "Pulumi.staging.yaml", "Pulumi.prod.yaml", "__main__.py", "components", "config", "migrations",
                 "monitoring", "lab"]
# Not the host `make lab` uses, so the tests never undo an operator's lab deployment.
LAB_HOST = "hft-staging-01"


def lab(*args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["python3", "-m", "lab", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"python3 -m lab {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def on_host(command: str, check: bool = True) -> str:
    return lab("ssh", LAB_HOST, command, check=check).stdout


def ssh_logins() -> int:
    """How many SSH sessions sshd has accepted on the lab host (each remote command is one).

    The count includes the session that asks, so between two calls with nothing else
    happening it grows by exactly one.
    """
    out = on_host("journalctl -u ssh -u sshd --no-pager -o cat | grep -c 'Accepted publickey' || true")
    return int(out.strip().splitlines()[-1])


def project_copy(dest: Path) -> Path:
    """The project in ``dest``, so a scenario can change stack config without touching the repo."""
    for part in PROJECT_PARTS:
        src = REPO / part
        if src.is_dir():
            shutil.copytree(src, dest / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / part)
    (dest / "venv").symlink_to(REPO / "venv")
    stack_file = dest / "Pulumi.lab.yaml"
    stack_file.write_text(stack_file.read_text().replace("hft-prod-01:", f"{LAB_HOST}:"))
    return dest


def lab_cli(project: Path, state: Path) -> Pulumi:
    passphrase = (REPO / "tools" / "lab-passphrase.txt").read_text().strip()
    return Pulumi(project, "lab", state, passphrase=passphrase)


def preview_ops(cli: Pulumi, *extra: str) -> dict[str, str]:
    """Resource name -> operation that `pulumi preview` plans (same, create, update, replace...)."""
    out = cli.run("preview", "--json", *extra).stdout
    steps = json.loads(out).get("steps", [])
    return {s["urn"].rsplit("::", 1)[-1]: s["op"] for s in steps}
