"""A lab host of kind vm for real: QEMU with its own kernel, booted through GRUB from the cached
VM image, on the lab bridge with a pinned host key; stop, up, destroy. (A reboot from inside,
in the same QEMU process, is tests/test_vm_stack.py's reboot into the RT kernel.)

Runs ``python3 -m lab`` as operators do, in a lab home of its own (tests/vm_lab.py). The VM
host (hft-rt-01) must not be running from another lab home.

    venv/bin/python -m pytest tests/test_lab_vm.py
"""

from __future__ import annotations

import json
import platform
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import config, vm
from lab.sysutil import start_time
from tests.vm_lab import VM as HOST, Lab, claimed_elsewhere, lab_home

MARKER = "/root/lab-vm-test-marker"
pytestmark = pytest.mark.timeout(3600)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with lab_home("hft-lab-vm-test-", (HOST,)) as the_lab:
        yield the_lab
        print("\nlab vm times (s):", json.dumps(the_lab.times))


def test_up_boots_the_vm(lab: Lab) -> None:
    t0 = time.monotonic()
    up = lab.run("up", HOST)
    lab.times["up (image cached or built, boot to SSH)"] = round(time.monotonic() - t0, 1)
    lab.times.update({"boot to SSH": t for t in lab.boot_times(up).values()})
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


def test_stop_keeps_the_disk(lab: Lab) -> None:
    inv = lab.inventory()["hosts"]
    pid = lab.qemu_pid()
    lab.out(f"echo here > {MARKER}; sync")
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
    assert claimed_elsewhere(HOST) is None
    assert not (Path("/run/hftlab/hosts") / f"{HOST}.json").exists()
