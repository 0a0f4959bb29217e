"""The lab for real: two booted hosts, strict SSH, isolated roots, shared apt cache, teardown.

Runs ``python3 -m lab`` as operators do, with its own lab home (a temp dir) so it never stops
or destroys hosts of someone's lab, but with the shared image cache so a warm image is reused.
It picks two hosts that no other lab home is running. Prerequisites that are missing fail the
test with what is missing: a skipped lab test would hide a broken lab.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab import cgroups, config, hosts, prereq
from lab.sysutil import start_time

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "hello"  # small, in Debian main, not in the image
MARKER = "/root/lab-test-marker"
pytestmark = pytest.mark.timeout(900)


@dataclass
class Lab:
    home: Path
    env: dict[str, str]
    a: str
    b: str
    veths: list[str]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "lab", *args], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=800)
        if check and proc.returncode != 0:
            pytest.fail(f"`python3 -m lab {' '.join(args)}` exited {proc.returncode}:\n"
                        f"{proc.stderr}{proc.stdout}")
        return proc

    def inventory(self) -> dict:
        return json.loads(self.run("inventory").stdout)

    def ssh(self, host: str, cmd: str) -> subprocess.CompletedProcess[str]:
        return self.run("ssh", host, cmd, check=False)


def _free_hosts() -> list[str]:
    """Hosts that no lab home runs now, preferring the end of the fleet (least used)."""
    run_hosts = Path("/run/hftlab/hosts")
    busy = set()
    for name in config.HOSTS:
        f = run_hosts / f"{name}.json"
        if f.exists():
            claim = json.loads(f.read_text())
            if start_time(int(claim["pid"])) == claim.get("start"):
                busy.add(name)
    return [n for n in reversed(config.HOSTS) if n not in busy]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    missing = prereq.problems(need_root=True)
    if missing:
        pytest.fail("lab prerequisites missing: " + "; ".join(missing))
    free = _free_hosts()
    if len(free) < 2:
        pytest.fail(f"need two lab hosts not running from another lab home; free: {free}")
    home = Path(tempfile.mkdtemp(prefix="hft-lab-test-"))
    env = dict(os.environ)
    env["HFT_LAB_HOME"] = str(home)
    env.setdefault("HFT_LAB_IMAGE_CACHE", str(config.paths().image_cache))
    the_lab = Lab(home=home, env=env, a=free[0], b=free[1], veths=[])
    try:
        yield the_lab
    finally:
        the_lab.run("destroy", check=False)
        shutil.rmtree(home, ignore_errors=True)


def _bridge_ports() -> set[str]:
    d = Path("/sys/class/net") / config.BRIDGE / "brif"
    return {p.name for p in d.iterdir()} if d.is_dir() else set()


def test_up_boots_two_hosts(lab: Lab) -> None:
    before = _bridge_ports()
    lab.run("up", lab.a, lab.b)
    lab.veths = sorted(_bridge_ports() - before)
    assert len(lab.veths) == 2, f"expected two new veths on {config.BRIDGE}: {lab.veths}"
    inv = lab.inventory()
    assert inv["bridge"] == "hftlab0" and inv["apt_proxy"] == "http://198.18.0.1:3128"
    assert set(inv["hosts"]) == {lab.a, lab.b}
    for name, h in inv["hosts"].items():
        assert h["running"] is True
        assert h["address"] == config.HOSTS[name] and h["port"] == 22 and h["user"] == "root"
        assert h["host_key"].startswith("ssh-ed25519 AAAA") and len(h["host_key"].split()) == 2
        assert oct(Path(h["private_key"]).stat().st_mode & 0o777) == "0o600"
    status = lab.run("status").stdout
    for name in (lab.a, lab.b):
        line = next(row for row in status.splitlines() if row.startswith(name))
        assert ("running" in line or "degraded" in line) and " yes " in line, status


def _ssh_strict(known_hosts: Path, h: dict, cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ssh", "-i", h["private_key"], "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
         "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}",
         "-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5",
         "-p", str(h["port"]), f"{h['user']}@{h['address']}", cmd],
        capture_output=True, text=True, timeout=60)


def test_ssh_with_pinned_host_keys(lab: Lab, tmp_path: Path) -> None:
    inv = lab.inventory()["hosts"]
    known = tmp_path / "known_hosts"
    known.write_text("".join(f"{h['address']} {h['host_key']}\n" for h in inv.values()))
    for name, h in inv.items():
        proc = _ssh_strict(known, h, "hostname; systemctl is-system-running")
        assert proc.returncode in (0, 1), proc.stderr
        assert proc.stdout.split()[0] == name
        assert proc.stdout.split()[1] in ("running", "degraded")
    assert inv[lab.a]["host_key"] != inv[lab.b]["host_key"], "hosts share a host key"
    # Strictness is real: pinning the other host's key must be refused.
    wrong = tmp_path / "wrong_known_hosts"
    wrong.write_text(f"{inv[lab.a]['address']} {inv[lab.b]['host_key']}\n")
    proc = _ssh_strict(wrong, inv[lab.a], "true")
    assert proc.returncode == 255 and "host key" in proc.stderr.lower(), proc.stderr
    assert lab.ssh(lab.a, "exit 7").returncode == 7  # the ssh verb passes exit codes through


def test_roots_are_separate(lab: Lab) -> None:
    assert lab.ssh(lab.a, f"echo {lab.a} > {MARKER}").returncode == 0
    assert lab.ssh(lab.a, f"cat {MARKER}").stdout.strip() == lab.a
    assert lab.ssh(lab.b, f"test -e {MARKER}").returncode == 1


def test_apt_install_and_shared_archives(lab: Lab) -> None:
    first = lab.ssh(lab.a, f"apt-get update -q && apt-get install -y {PACKAGE} && {PACKAGE}")
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert "Hello, world!" in first.stdout
    archives = lab.home / "apt-archives"
    debs = sorted(p.name for p in archives.glob("*.deb"))
    assert any(d.startswith(f"{PACKAGE}_") for d in debs), debs
    second = lab.ssh(lab.b, f"apt-get update -q && apt-get install -y {PACKAGE}")
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert "Need to get 0 B" in second.stdout, second.stdout[-2000:]
    assert sorted(p.name for p in archives.glob("*.deb")) == debs


def test_stop_then_up_keeps_changes(lab: Lab) -> None:
    lab.run("stop", lab.a, lab.b)
    inv = lab.inventory()["hosts"]
    assert not inv[lab.a]["running"] and not inv[lab.b]["running"]
    lab.run("up", lab.a, lab.b)
    assert lab.ssh(lab.a, f"cat {MARKER}").stdout.strip() == lab.a
    assert lab.ssh(lab.a, f"{PACKAGE}").stdout.strip() == "Hello, world!"
    assert lab.inventory()["hosts"] == inv | {
        n: inv[n] | {"running": True} for n in inv}, "host keys changed across stop/up"


def test_destroy_leaves_nothing(lab: Lab) -> None:
    home = str(lab.home)
    lab.run("destroy")
    procs = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if home in cmdline:
                procs.append(f"{proc.name}: {cmdline}")
    assert procs == [], procs
    mounts = [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if home in line]
    assert mounts == [], mounts
    links = {p.name for p in Path("/sys/class/net").iterdir()}
    assert not set(lab.veths) & links, f"veths left: {set(lab.veths) & links}"
    assert lab.inventory()["hosts"] == {}
    groups = [str(g) for n in (lab.a, lab.b) for g in cgroups.host_groups(n) if g.exists()]
    assert groups == [], f"cgroups left: {groups}"
    others = hosts.live_claims(config.paths())
    if others:
        # Another lab home's hosts still use the bridge and proxy; they must stay for them.
        assert config.BRIDGE in links, f"bridge removed under running hosts {others}"
    else:
        assert config.BRIDGE not in links, "bridge left behind"
        assert not Path("/run/hftlab/proxy.pid").exists(), "proxy left behind"
        assert subprocess.run(["ss", "-Hltn", "src", config.GATEWAY], capture_output=True,
                              text=True).stdout.strip() == "", "something still listens"
