"""Run the real Pulumi CLI from tests, with the environment `make env` gives operators.

Tests drive the CLI itself (not mocks) so that what they prove is what `pulumi up` does.
A missing toolchain is a failure that says how to build it, never a skip.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def toolchain_env() -> dict[str, str]:
    """The exports of tools/env.sh applied to this process's environment."""
    out = subprocess.run([str(REPO / "tools" / "env.sh")], check=True, capture_output=True, text=True).stdout
    env = dict(os.environ)
    for name, value in re.findall(r'^export (\w+)="?(.*?)"?$', out, flags=re.M):
        env[name] = value.replace("$PATH", os.environ.get("PATH", ""))
    pulumi = Path(env["PATH"].split(":")[0]) / "pulumi"
    if not pulumi.exists():
        raise AssertionError(f"the Pulumi toolchain is not built ({pulumi} is missing): run `make tools`")
    return env


@dataclass
class Pulumi:
    """A Pulumi CLI bound to one project directory, one stack and one state directory."""

    project_dir: Path
    stack: str
    state_dir: Path
    passphrase: str

    def env(self) -> dict[str, str]:
        env = toolchain_env()
        env["PULUMI_BACKEND_URL"] = f"file://{self.state_dir}"
        env["PULUMI_CONFIG_PASSPHRASE"] = self.passphrase
        env.pop("PULUMI_CONFIG_PASSPHRASE_FILE", None)
        return env

    def run(
        self, *args: str, check: bool = True, select_stack: bool = True, timeout: float = 900,
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        cmd = ["pulumi", *args, "--non-interactive", "--cwd", str(self.project_dir)]
        if select_stack:
            cmd += ["--stack", self.stack]
        proc = subprocess.run(cmd, env={**self.env(), **(extra_env or {})}, capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"`{' '.join(cmd)}` exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        return proc

    def init(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.run("stack", "init", self.stack, "--secrets-provider", "passphrase", select_stack=False)

    def export(self) -> dict:
        return json.loads(self.run("stack", "export").stdout)

    def outputs(self, show_secrets: bool = False) -> dict:
        args = ["stack", "output", "--json"] + (["--show-secrets"] if show_secrets else [])
        return json.loads(self.run(*args).stdout)
