"""One lab host of kind ``vm``: a QEMU guest with its own kernel, on the same bridge as the rest.

Its disk is a qcow2 overlay whose backing file is the cached VM image (lab/vmimage.py), so a
host keeps what a deploy installed (an RT kernel, say) until ``destroy``. What is unique per
host (hostname, address, ed25519 host key generated here before the first boot, the lab's
client key) is not written into the disk but into a small "seed" ext4 disk that the image's
``hftlab-seed.service`` copies into place on every boot, before networking and sshd start.

QEMU runs without ``-no-reboot``: a reboot inside the guest resets the machine within the same
QEMU process, so the PID the lab tracks (and its claim on the host name) lives across guest
reboots. A guest that powers itself off ends QEMU: the host is then simply stopped.
``stop`` asks the guest to shut down (ACPI power button over QMP) and waits, then kills.
The NIC is a persistent tap ``hftvN`` (N: the address's last byte) on ``hftlab0``, made before
QEMU starts and deleted by ``stop``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import time
from pathlib import Path

from lab import accel, config, network
from lab.config import Paths
from lab.errors import LabError
from lab.sysutil import run, say, spawn_detached, start_time, stop_tracked, tracked_pid

MEMORY_MIB = int(os.environ.get("HFT_LAB_VM_MEMORY_MIB", "2048"))
CPUS = int(os.environ.get("HFT_LAB_VM_CPUS", "1"))
SHUTDOWN_TIMEOUT = 90.0


def tap_name(name: str) -> str:
    return "hftv" + config.ALL_HOSTS[name].rsplit(".", 1)[1]


def mac(name: str) -> str:
    a, b, c, d = (int(x) for x in config.ALL_HOSTS[name].split("."))
    return f"52:54:00:{b:02x}:{c:02x}:{d:02x}"


def disk(p: Paths, name: str) -> Path:
    return p.host_dir(name) / "disk.qcow2"


def running_pid(p: Paths, name: str) -> int | None:
    return tracked_pid(p.host_dir(name) / "qemu.pid")


def started_with(p: Paths, name: str) -> dict[str, str]:
    """What the running (or last) QEMU was started with: accelerator and why."""
    try:
        return json.loads((p.host_dir(name) / "vm.json").read_text())
    except (OSError, ValueError):
        return {}


def prepare(p: Paths, name: str, entry: Path, pubkey: str) -> None:
    """Create the overlay disk (once), the host key (once) and the seed disk (every start)."""
    d = p.host_dir(name)
    d.mkdir(parents=True, exist_ok=True)
    backing = entry / "disk.qcow2"
    image_file = d / "image"
    if not disk(p, name).exists():
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(backing), "-F", "qcow2",
             str(disk(p, name))], "create VM disk", name)
        image_file.write_text(str(entry) + "\n")
    used = Path(image_file.read_text().strip()) if image_file.exists() else entry
    if not (used / "disk.qcow2").exists():
        raise LabError("prepare VM disk", f"its image {used} is gone from the image cache",
                       f"`python3 -m lab destroy {name}` then `up` (its changes are lost)", name)
    if used != entry:
        say(f"{name}: keeps the older VM image it was created from (destroy it to use the new one)")
    key = d / "ssh_host_ed25519_key"
    if not key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{name}", "-f", str(key)],
            "generate host key", name)
    shutil.copyfile(key.with_suffix(".pub"), d / "host_key.pub")
    _write_seed(p, name, pubkey)


def _write_seed(p: Paths, name: str, pubkey: str) -> None:
    d = p.host_dir(name)
    seed = d / "seed"
    if seed.exists():
        shutil.rmtree(seed)
    root = seed / "root"
    files = {
        "etc/hostname": (name + "\n", 0o644),
        "etc/hosts": (_hosts_file(), 0o644),
        "etc/systemd/network/10-hftlab.network": (
            f"[Match]\nMACAddress={mac(name)}\n\n[Network]\n"
            f"Address={config.ALL_HOSTS[name]}/{config.PREFIX_LEN}\nLinkLocalAddressing=no\n"
            "IPv6AcceptRA=no\n", 0o644),
        "root/.ssh/authorized_keys": (pubkey.strip() + "\n", 0o600),
        "etc/ssh/ssh_host_ed25519_key": ((d / "ssh_host_ed25519_key").read_text(), 0o600),
        "etc/ssh/ssh_host_ed25519_key.pub": ((d / "host_key.pub").read_text(), 0o644),
    }
    for rel, (text, mode) in files.items():
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
        f.chmod(mode)
    (root / "root").chmod(0o700)
    (root / "root" / ".ssh").chmod(0o700)
    img = d / "seed.img"
    img.unlink(missing_ok=True)
    run(["mkfs.ext4", "-q", "-L", "HFTSEED", "-E", "root_owner=0:0", "-d", str(seed), str(img),
         "4M"], "write seed disk", name)
    shutil.rmtree(seed)


def _hosts_file() -> str:
    text = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    text += "".join(f"{addr}\t{n}\n" for n, addr in config.ALL_HOSTS.items())
    return text + f"{config.GATEWAY}\thftlab-gateway\n"


def _ensure_tap(name: str) -> None:
    tap = tap_name(name)
    step = f"create tap {tap}"
    if not (network.SYS_NET / tap).exists():
        run(["ip", "tuntap", "add", "dev", tap, "mode", "tap"], step, name)
    run(["ip", "link", "set", tap, "master", config.BRIDGE], step, name)
    run(["ip", "link", "set", tap, "up"], step, name)


def remove_tap(name: str) -> None:
    tap = tap_name(name)
    if (network.SYS_NET / tap).exists():
        run(["ip", "link", "del", tap], f"remove tap {tap}", name)


def qemu_argv(p: Paths, name: str, acc: accel.Accel) -> list[str]:
    d = p.host_dir(name)
    return ["qemu-system-x86_64", "-name", name, *acc.qemu_args(), "-machine", "pc",
            "-m", str(MEMORY_MIB), "-smp", str(CPUS), "-nodefaults", "-display", "none",
            "-vga", "none", "-chardev", f"file,id=console,path={d / 'console.log'},append=on",
            "-serial", "chardev:console",
            "-drive", f"file={disk(p, name)},if=virtio,format=qcow2,discard=unmap",
            "-drive", f"file={d / 'seed.img'},if=virtio,format=raw,readonly=on",
            "-netdev", f"tap,id=net0,ifname={tap_name(name)},script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=net0,mac={mac(name)}",
            "-virtfs", f"local,path={p.archives},mount_tag=hftapt,security_model=passthrough,"
                       "id=hftapt",
            "-device", "virtio-rng-pci",
            "-qmp", f"unix:{d / 'qmp.sock'},server=on,wait=off"]


def start(p: Paths, name: str, acc: accel.Accel, claim: Path) -> int:
    d = p.host_dir(name)
    log = d / "console.log"
    if log.exists() and log.stat().st_size > 4 << 20:
        log.replace(d / "console.log.old")
    _ensure_tap(name)
    (d / "qmp.sock").unlink(missing_ok=True)
    pid = spawn_detached(qemu_argv(p, name, acc), d / "qemu.log", d / "qemu.pid")
    (d / "vm.json").write_text(json.dumps({"accel": acc.name, "accel_reason": acc.reason}) + "\n")
    claim.parent.mkdir(parents=True, exist_ok=True)
    claim.write_text(json.dumps({"home": str(p.home), "pid": pid, "start": start_time(pid)}))
    time.sleep(0.5)
    if running_pid(p, name) is None:
        tail = (d / "qemu.log").read_text(errors="replace").strip()[-500:]
        raise LabError("start QEMU", f"it exited at once: {tail}", f"see {d / 'qemu.log'}", name)
    return pid


def _qmp(sock: Path, command: str, timeout: float = 5.0) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(sock))
        f = s.makefile("rw")
        f.readline()  # greeting
        for cmd in ("qmp_capabilities", command):
            f.write(json.dumps({"execute": cmd}) + "\n")
            f.flush()
            while True:  # skip asynchronous events until the command's answer
                msg = json.loads(f.readline() or "{}")
                if "return" in msg or "error" in msg or not msg:
                    break


def stop(p: Paths, name: str, keep_tap: bool = False) -> None:
    """ACPI shutdown of the guest, waiting up to SHUTDOWN_TIMEOUT; then kill; remove the tap.

    ``keep_tap``: the host name (and so its tap) is in use by another lab home's VM now.
    """
    d = p.host_dir(name)
    pid = running_pid(p, name)
    if pid is not None:
        say(f"{name}: shutting down (ACPI power button)")
        try:
            _qmp(d / "qmp.sock", "system_powerdown")
            deadline = time.monotonic() + SHUTDOWN_TIMEOUT
            while start_time(pid) is not None and time.monotonic() < deadline:
                _reap(pid)
                time.sleep(0.3)
        except (OSError, ValueError) as exc:
            say(f"{name}: QMP failed ({exc}); stopping QEMU")
        if start_time(pid) is not None:
            say(f"{name}: did not power off within {SHUTDOWN_TIMEOUT:.0f}s, stopping QEMU")
    stop_tracked(d / "qemu.pid", signal.SIGTERM, timeout=10)
    (d / "qmp.sock").unlink(missing_ok=True)
    if not keep_tap:
        remove_tap(name)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def memory_pss_kib(p: Paths, name: str) -> int | None:
    pid = running_pid(p, name)
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None
