"""Helpers for the lab-stack scenarios: a private copy of the project, the lab host, SSH checks."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from tests.pulumi_cli import REPO, Pulumi

PROJECT_PARTS = ["Pulumi.yaml", "Pulumi.lab.yaml", "Pulumi.staging.yaml", "Pulumi.prod.yaml", "__main__.py", "components", "config", "migrations",
                 "monitoring", "lab"]
# Not the hosts `make lab` uses, so the tests never undo an operator's lab deployment:
# the lab stack's blue host (with the database and monitoring) and its green host.
BLUE_HOST, GREEN_HOST = "hft-staging-01", "hft-dev-01"
LAB_HOSTS = {"hft-prod-01": BLUE_HOST, "hft-prod-02": GREEN_HOST}
# Where the move scenario takes app:green.
SPARE_HOST = "hft-eu-west-01"


def lab(*args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["python3", "-m", "lab", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"python3 -m lab {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def on_host(command: str, check: bool = True, host: str = BLUE_HOST) -> str:
    return lab("ssh", host, command, check=check).stdout


def ssh_logins(host: str) -> int:
    """How many SSH sessions sshd has accepted on a lab host (each remote command is one).

    The count includes the session that asks, so between two calls with nothing else
    happening it grows by exactly one.
    """
    out = on_host("journalctl -u ssh -u sshd --no-pager -o cat | grep -c 'Accepted publickey' || true", host=host)
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
    text = stack_file.read_text()
    for name, test_host in LAB_HOSTS.items():
        text = text.replace(name, test_host)
    stack_file.write_text(text)
    return dest


class RecordingPulumi(Pulumi):
    """A Pulumi CLI that keeps everything it printed, for the secret scans."""

    transcript: list[str]

    def run(self, *args, **kwargs) -> subprocess.CompletedProcess[str]:
        try:
            proc = super().run(*args, **kwargs)
        except AssertionError as err:
            self.transcript.append(str(err))
            raise
        self.transcript.append(proc.stdout + proc.stderr)
        return proc


def lab_cli(project: Path, state: Path) -> RecordingPulumi:
    passphrase = (REPO / "tools" / "lab-passphrase.txt").read_text().strip()
    cli = RecordingPulumi(project, "lab", state, passphrase=passphrase)
    cli.transcript = []
    return cli


def leaked(text: str, secrets: dict[str, str]) -> list[str]:
    """Names of the secrets whose value appears in ``text`` (whole, or any line of a multi-line one)."""
    found = []
    for name, value in secrets.items():
        parts = [value] + [line for line in value.splitlines() if len(line) >= 16 and "PRIVATE KEY" not in line]
        if any(p and p in text for p in parts):
            found.append(name)
    return found


def preview_ops(cli: Pulumi, *extra: str) -> dict[str, str]:
    """Resource -> operation that `pulumi preview` plans (same, create, update, replace...).

    Resources are named ``type-name`` for components (``hft:host:Server::hft-prod-01``) and by
    their own name for commands (which are already named ``<owner>-<concern>``).
    """
    out = cli.run("preview", "--json", *extra).stdout
    ops: dict[str, str] = {}
    for s in json.loads(out).get("steps", []):
        typ, name = s["urn"].split("::")[-2:]
        last = typ.split("$")[-1]
        ops[name if last == "command:remote:Command" else f"{last}::{name}"] = s["op"]
    return ops
