"""What the lab VM tests share: a lab home of their own, `python3 -m lab` in it, SSH to its hosts.

Each VM test module runs ``python3 -m lab`` as operators do, in a temporary lab home with the
shared image cache (the VM image is built on first use), so it never touches hosts of another
lab home; the hosts it names must not be running from another lab home. Missing prerequisites
fail the test with what is missing: nothing is skipped.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lab import config, prereq
from lab.sysutil import start_time, tracked_pid

ROOT = Path(__file__).resolve().parent.parent
VM = "hft-rt-01"


def claimed_elsewhere(name: str) -> str | None:
    """The lab home a running host ``name`` belongs to, when another one runs it."""
    f = Path("/run/hftlab/hosts") / f"{name}.json"
    if not f.exists():
        return None
    claim = json.loads(f.read_text())
    return claim["home"] if start_time(int(claim["pid"])) == claim.get("start") else None


def apt_cache() -> Path:
    """Packages the VM downloaded, kept between runs (HFT_VM_LAB_APT_CACHE)."""
    cache = Path(os.environ.get("HFT_VM_LAB_APT_CACHE") or Path.home() / ".cache" / "hft-deploy" / "vm-lab-apt")
    (cache / "partial").mkdir(parents=True, exist_ok=True)
    return cache


@dataclass
class Lab:
    """A lab home of a test's own and the `python3 -m lab` commands run in it."""
    home: Path
    env: dict[str, str]
    times: dict[str, float] = field(default_factory=dict)

    def run(self, *args: str, check: bool = True, timeout: float = 2400) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "lab", *args], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            pytest.fail(f"`python3 -m lab {' '.join(args)}` exited {proc.returncode}:\n"
                        f"{proc.stderr}{proc.stdout}")
        return proc

    def inventory(self) -> dict:
        return json.loads(self.run("inventory").stdout)

    def ssh(self, cmd: str, host: str = VM, timeout: float = 60,
            stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "lab", "ssh", host, cmd], cwd=ROOT, env=self.env,
                              input=stdin, capture_output=True, text=True, timeout=timeout)

    def out(self, cmd: str, host: str = VM, timeout: float = 60) -> str:
        proc = self.ssh(cmd, host, timeout)
        assert proc.returncode == 0, f"on {host}: `{cmd}` exited {proc.returncode}: {proc.stderr}{proc.stdout}"
        return proc.stdout.strip()

    def qemu_pid(self, host: str = VM) -> int | None:
        return tracked_pid(self.home / "hosts" / host / "qemu.pid")

    def boot_times(self, up: subprocess.CompletedProcess[str]) -> dict[str, float]:
        """Each host's "running after N s" from `lab up`'s report."""
        out = {}
        for line in up.stderr.splitlines():
            for state in ("running", "degraded"):
                if f": {state} after " in line:
                    name = line.split(":")[0].split()[-1]
                    out[name] = float(line.split(" after ")[1].split("s")[0])
        return out

    def logins(self, host: str) -> int:
        """How many SSH sessions sshd accepted on ``host`` (the asking one included)."""
        out = self.out("journalctl -u ssh -u sshd --no-pager -o cat | grep -c 'Accepted publickey' || true", host)
        return int(out.splitlines()[-1])


@contextmanager
def lab_home(prefix: str, hosts: tuple[str, ...], apt_archives: Path | None = None) -> Iterator[Lab]:
    """A temporary lab home for ``hosts``; every host of it destroyed and the home removed after."""
    missing = prereq.problems(need_root=True, vm=True)
    if missing:
        pytest.fail("lab prerequisites missing: " + "; ".join(missing))
    for name in hosts:
        other = claimed_elsewhere(name)
        if other:
            pytest.fail(f"{name} is running from another lab home ({other}); stop it there first")
    for tool in ("ssh", "git", "timeout"):
        if shutil.which(tool) is None:
            pytest.fail(f"prerequisite missing on this machine: {tool}")
    home = Path(tempfile.mkdtemp(prefix=prefix))
    if apt_archives is not None:
        (home / "apt-archives").symlink_to(apt_archives)
    env = dict(os.environ, HFT_LAB_HOME=str(home))
    env.setdefault("HFT_LAB_IMAGE_CACHE", str(config.paths().image_cache))
    the_lab = Lab(home=home, env=env)
    try:
        yield the_lab
    finally:
        the_lab.run("destroy", check=False)
        shutil.rmtree(home, ignore_errors=True)
