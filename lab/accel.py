"""Choose how QEMU runs lab VMs: KVM where a guest really runs under it, TCG otherwise.

``/dev/kvm`` existing is not enough. On these machines (themselves VMs) a nested KVM guest
never gets through the kernel's early boot: QEMU 7.2 either aborts at start (``-cpu host``:
"failed to set MSR 0x10a") or, with its default CPU model, spins in the guest's decompressor
without printing anything ("KVM internal error" at the first ``lock cmpxchg16b`` was seen on
another setup). So the lab boots the VM image's own kernel once under KVM with no root
device and ``panic=-1``: a working KVM runs it to the "VFS: Unable to mount root fs" panic
and QEMU exits (``-no-reboot``) within seconds; anything else (an error, an abort, silence
until the timeout) means TCG. The answer is kept in /run/hftlab/accel.json for this boot of
the machine. ``HFT_LAB_VM_ACCEL=kvm|tcg`` skips the probe.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from lab.errors import LabError
from lab.sysutil import say

PROBE_TIMEOUT = 20.0


@dataclass(frozen=True)
class Accel:
    name: str  # "kvm" or "tcg"
    reason: str

    def qemu_args(self) -> list[str]:
        # Under KVM the default CPU model; "host" aborts in nested setups (MSR 0x10a).
        return ["-accel", self.name]


def _boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def _qemu_version() -> str:
    proc = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True)
    return (proc.stdout.splitlines() or ["?"])[0]


def probe_kvm(kernel: Path) -> tuple[bool, str]:
    """Boot ``kernel`` under KVM to its no-root panic; (works, what was seen)."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
        os.close(fd)
    except OSError as exc:
        return False, f"/dev/kvm not usable ({exc.strerror})"
    with tempfile.TemporaryDirectory(prefix="hftlab-kvm-probe-") as tmp:
        serial = Path(tmp) / "serial.log"
        argv = ["qemu-system-x86_64", "-accel", "kvm", "-m", "256", "-nodefaults",
                "-display", "none", "-no-reboot", "-serial", f"file:{serial}",
                "-kernel", str(kernel),
                "-append", "console=ttyS0 panic=-1 root=/dev/hftlab-probe-none"]
        t0 = time.monotonic()
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT)
        except subprocess.TimeoutExpired:
            return False, (f"a KVM guest printed {serial_size(serial)} bytes in "
                           f"{PROBE_TIMEOUT:.0f}s and did not finish booting (nested KVM)")
        text = serial.read_text(errors="replace") if serial.exists() else ""
        err = " | ".join(proc.stderr.strip().splitlines()[-2:])
        if "KVM internal error" in proc.stderr:
            return False, f"KVM internal error: {err}"
        if proc.returncode == 0 and "Kernel panic" in text:
            return True, f"a KVM guest booted its kernel in {time.monotonic() - t0:.1f}s"
        return False, f"KVM guest failed (exit {proc.returncode}): {err or 'no output'}"


def serial_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def choose(run_dir: Path, kernel: Path) -> Accel:
    """KVM or TCG for this machine, probing once per machine boot."""
    forced = os.environ.get("HFT_LAB_VM_ACCEL", "").strip().lower()
    if forced:
        if forced not in ("kvm", "tcg"):
            raise LabError("choose VM accelerator", f"HFT_LAB_VM_ACCEL={forced!r}",
                           "set it to kvm or tcg, or unset it to probe")
        return Accel(forced, "HFT_LAB_VM_ACCEL")
    record = run_dir / "accel.json"
    key = {"boot_id": _boot_id(), "qemu": _qemu_version()}
    try:
        data = json.loads(record.read_text())
        if all(data.get(k) == v for k, v in key.items()):
            return Accel(data["accel"], data["reason"])
    except (OSError, ValueError, KeyError):
        pass
    say("vm: probing KVM (a guest kernel boots to a panic, up to "
        f"{PROBE_TIMEOUT:.0f}s)")
    works, seen = probe_kvm(kernel)
    accel = Accel("kvm", seen) if works else Accel("tcg", f"KVM unusable: {seen}")
    say(f"vm: using {accel.name} ({accel.reason})")
    run_dir.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({**key, "accel": accel.name, "reason": accel.reason}) + "\n")
    return accel


def cached(run_dir: Path) -> Accel | None:
    """The choice made for this machine boot, if any (for status and inventory)."""
    forced = os.environ.get("HFT_LAB_VM_ACCEL", "").strip().lower()
    if forced in ("kvm", "tcg"):
        return Accel(forced, "HFT_LAB_VM_ACCEL")
    try:
        data = json.loads((run_dir / "accel.json").read_text())
        if data.get("boot_id") == _boot_id():
            return Accel(data["accel"], data["reason"])
    except (OSError, ValueError, KeyError):
        pass
    return None
