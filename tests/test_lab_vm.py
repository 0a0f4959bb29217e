"""A lab host of kind vm for real: QEMU with its own kernel, booted through GRUB from the cached
VM image, on the lab bridge with a pinned host key; reboot from inside, stop, up, destroy.

Runs ``python3 -m lab`` as operators do, in a lab home of its own (a temp dir) with the shared
image cache (the VM image is built on first use: several minutes), so it never touches hosts of
another lab home. The VM host (hft-rt-01) must not be running from another lab home.
Missing prerequisites fail the test with what is missing: nothing is skipped.

    venv/bin/python -m pytest tests/test_lab_vm.py
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lab import config, prereq, vm
from lab.sysutil import start_time, tracked_pid

ROOT = Path(__file__).resolve().parent.parent
HOST = "hft-rt-01"
MARKER = "/root/lab-vm-test-marker"
pytestmark = pytest.mark.timeout(3600)


@dataclass
class Lab:
    home: Path
    env: dict[str, str]
    times: dict[str, float] = field(default_factory=dict)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "lab", *args], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=2400)
        if check and proc.returncode != 0:
            pytest.fail(f"`python3 -m lab {' '.join(args)}` exited {proc.returncode}:\n"
                        f"{proc.stderr}{proc.stdout}")
        return proc

    def inventory(self) -> dict:
        return json.loads(self.run("inventory").stdout)

    def ssh(self, cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "lab", "ssh", HOST, cmd], cwd=ROOT,
                              env=self.env, capture_output=True, text=True, timeout=timeout)

    def out(self, cmd: str) -> str:
        proc = self.ssh(cmd)
        assert proc.returncode == 0, f"`{cmd}` exited {proc.returncode}: {proc.stderr}"
        return proc.stdout.strip()

    def qemu_pid(self) -> int | None:
        return tracked_pid(self.home / "hosts" / HOST / "qemu.pid")


def _claimed_elsewhere(name: str) -> str | None:
    f = Path("/run/hftlab/hosts") / f"{name}.json"
    if not f.exists():
        return None
    claim = json.loads(f.read_text())
    return claim["home"] if start_time(int(claim["pid"])) == claim.get("start") else None


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    missing = prereq.problems(need_root=True, vm=True)
    if missing:
        pytest.fail("lab prerequisites missing: " + "; ".join(missing))
    other = _claimed_elsewhere(HOST)
    if other:
        pytest.fail(f"{HOST} is running from another lab home ({other}); stop it there first")
    home = Path(tempfile.mkdtemp(prefix="hft-lab-vm-test-"))
    env = dict(os.environ, HFT_LAB_HOME=str(home))
    env.setdefault("HFT_LAB_IMAGE_CACHE", str(config.paths().image_cache))
    the_lab = Lab(home=home, env=env)
    try:
        yield the_lab
        print("\nlab vm times (s):", json.dumps(the_lab.times))
    finally:
        the_lab.run("destroy", check=False)
        shutil.rmtree(home, ignore_errors=True)


def wait_ssh(lab: Lab, timeout: float = 900) -> float:
    """Seconds until `systemctl is-system-running` answers running/degraded over SSH."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        proc = lab.ssh("systemctl is-system-running", timeout=30)
        if proc.stdout.strip() in ("running", "degraded"):
            return time.monotonic() - t0
        time.sleep(2)
    pytest.fail(f"{HOST} not back over SSH within {timeout:.0f}s")


def test_up_boots_the_vm(lab: Lab) -> None:
    t0 = time.monotonic()
    up = lab.run("up", HOST)
    lab.times["up (image cached or built, boot to SSH)"] = round(time.monotonic() - t0, 1)
    for line in up.stderr.splitlines():
        if f"{HOST}: running after" in line or f"{HOST}: degraded after" in line:
            lab.times["boot to SSH"] = float(line.split(" after ")[1].split("s")[0])
    inv = lab.inventory()
    assert inv["bridge"] == "hftlab0" and inv["apt_proxy"] == "http://198.18.0.1:3128"
    h = inv["hosts"][HOST]
    assert h["kind"] == "vm" and h["accel"] in ("kvm", "tcg"), h
    assert h["running"] is True
    assert h["address"] == "198.18.0.19" and h["port"] == 22 and h["user"] == "root"
    assert h["host_key"].startswith("ssh-ed25519 AAAA") and len(h["host_key"].split()) == 2
    assert oct(Path(h["private_key"]).stat().st_mode & 0o777) == "0o600"
    assert config.kind("hft-dev-01") == "container" and "hft-rt-01" not in config.HOSTS
    status = lab.run("status").stdout
    line = next(row for row in status.splitlines() if row.startswith(HOST))
    assert f"vm ({h['accel']})" in line, status
    assert ("running" in line or "degraded" in line) and " yes " in line, status
    tap = Path("/sys/class/net") / vm.tap_name(HOST)
    assert (tap / "master").resolve().name == config.BRIDGE, "tap not on the lab bridge"


def _ssh_strict(known_hosts: Path, h: dict, cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ssh", "-i", h["private_key"], "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
         "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}",
         "-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10",
         "-p", str(h["port"]), f"{h['user']}@{h['address']}", cmd],
        capture_output=True, text=True, timeout=120)


def test_ssh_with_pinned_key_and_own_kernel(lab: Lab, tmp_path: Path) -> None:
    h = lab.inventory()["hosts"][HOST]
    known = tmp_path / "known_hosts"
    known.write_text(f"{h['address']} {h['host_key']}\n")
    proc = _ssh_strict(known, h, "hostname; uname -r; systemd-detect-virt; "
                       "cat /sys/class/net/*/address")
    assert proc.returncode == 0, proc.stderr
    name, release, virt, *macs = proc.stdout.split()
    assert name == HOST
    # A kernel of its own: the image's Debian kernel, not this machine's.
    entry = Path((lab.home / "hosts" / HOST / "image").read_text().strip())
    assert release == (entry / "kernel").read_text().strip() and release != platform.release()
    assert virt in ("qemu", "kvm"), virt
    assert vm.mac(HOST) in macs
    # Strictness is real: a different key for this address is refused.
    other = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                            str(tmp_path / "k")], capture_output=True)
    assert other.returncode == 0
    wrong = tmp_path / "wrong_known_hosts"
    wrong.write_text(f"{h['address']} {' '.join((tmp_path / 'k.pub').read_text().split()[:2])}\n")
    proc = _ssh_strict(wrong, h, "true")
    assert proc.returncode == 255 and "host key" in proc.stderr.lower(), proc.stderr
    assert lab.ssh("exit 7").returncode == 7
    # A real kernel: /proc/sys is writable (it is read-only in a container host).
    assert lab.out("sysctl -w vm.swappiness=10 && cat /proc/sys/vm/swappiness").endswith("10")


def test_reboot_from_inside_comes_back(lab: Lab) -> None:
    boot_id = lab.out("cat /proc/sys/kernel/random/boot_id")
    pid = lab.qemu_pid()
    assert pid is not None
    lab.out(f"echo here > {MARKER}; sync")
    lab.ssh("systemctl reboot", timeout=30)
    t0 = time.monotonic()
    while lab.ssh("true", timeout=20).returncode == 0 and time.monotonic() - t0 < 120:
        time.sleep(1)  # until sshd has gone down
    lab.times["reboot to SSH"] = round(time.monotonic() - t0 + wait_ssh(lab), 1)
    assert lab.out("cat /proc/sys/kernel/random/boot_id") != boot_id, "did not reboot"
    assert lab.qemu_pid() == pid, "QEMU was restarted instead of the guest rebooting"
    assert lab.out(f"cat {MARKER}") == "here"
    assert lab.inventory()["hosts"][HOST]["running"] is True


def test_stop_keeps_the_disk(lab: Lab) -> None:
    inv = lab.inventory()["hosts"]
    pid = lab.qemu_pid()
    t0 = time.monotonic()
    lab.run("stop", HOST)
    lab.times["stop"] = round(time.monotonic() - t0, 1)
    assert start_time(pid) is None, "QEMU still running after stop"
    assert not (Path("/sys/class/net") / vm.tap_name(HOST)).exists(), "tap left after stop"
    assert lab.inventory()["hosts"][HOST]["running"] is False
    # The guest shut down cleanly (ACPI power button), it was not killed.
    console = (lab.home / "hosts" / HOST / "console.log").read_text(errors="replace")
    assert "reboot: Power down" in console, console[-2000:]
    lab.run("up", HOST)
    assert lab.out(f"cat {MARKER}") == "here"
    after = lab.inventory()["hosts"]
    assert after == inv, "inventory (host key, address) changed across stop/up"


def test_destroy_leaves_nothing(lab: Lab) -> None:
    home = str(lab.home)
    lab.run("destroy", HOST)
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
    assert not (Path("/sys/class/net") / vm.tap_name(HOST)).exists()
    assert not (lab.home / "hosts" / HOST).exists()
    assert lab.inventory()["hosts"] == {}
    assert _claimed_elsewhere(HOST) is None
    assert not (Path("/run/hftlab/hosts") / f"{HOST}.json").exists()
