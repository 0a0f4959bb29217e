"""One lab host: its overlay root, its per-host files, and its systemd-nspawn process.

Hosts of kind ``vm`` (config.VM_HOSTS) are QEMU guests instead, see lab/vm.py; the functions
here that every verb uses (created, running_pid, stop, destroy, memory) cover both kinds.

Each host boots real systemd (``-b``) on an overlay whose lower layer is the shared cached
image and whose upper layer is the host's own, so packages and files a deploy writes survive
``stop``/``up`` until ``destroy``. This machine has no systemd as PID 1 (so no machined and no
``systemd-run``): nspawn runs with ``--register=no --keep-unit`` in its own session, tracked by
PID, its console logged to a file in the host directory.
"""

from __future__ import annotations

import json
import shutil
import signal
import uuid
from pathlib import Path

from lab import cgroups, config, vm
from lab.config import Paths
from lab.errors import LabError
from lab.sysutil import run, say, spawn_detached, start_time, stop_tracked, tracked_pid


def created(p: Paths) -> list[str]:
    """Hosts of this lab home that exist (were brought up and not destroyed), in fleet order."""
    return [n for n in config.ALL_HOSTS if (p.host_dir(n) / marker(n)).exists()]


def marker(name: str) -> str:
    """The per-host file whose presence means the host was created (not destroyed)."""
    return "disk.qcow2" if config.kind(name) == "vm" else "lower"


def host_key(p: Paths, name: str) -> str | None:
    """The host's public key as ``ssh-ed25519 AAAA...`` (no comment), once generated."""
    f = p.host_dir(name) / "host_key.pub"
    if not f.exists():
        return None
    return " ".join(f.read_text().split()[:2])


def is_mounted(path: Path) -> bool:
    target = str(path)
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        if line.split()[4].replace("\\040", " ") == target:
            return True
    return False


def running_pid(p: Paths, name: str) -> int | None:
    if config.kind(name) == "vm":
        return vm.running_pid(p, name)
    return tracked_pid(p.host_dir(name) / "nspawn.pid")


def claim_path(p: Paths, name: str) -> Path:
    return p.run / "hosts" / f"{name}.json"


def claimed_by_other(p: Paths, name: str) -> str | None:
    """The other lab home whose container for ``name`` is running now, if any.

    Host names and addresses are machine-wide; two lab homes must not run the same host.
    """
    try:
        claim = json.loads(claim_path(p, name).read_text())
    except (OSError, ValueError):
        return None
    if claim.get("home") == str(p.home):
        return None
    if start_time(int(claim["pid"])) != claim.get("start"):
        return None
    return str(claim["home"])


def live_claims(p: Paths) -> list[str]:
    """Hosts of any lab home whose container process is alive (keeps the bridge in use)."""
    out = []
    for f in sorted((p.run / "hosts").glob("*.json")) if (p.run / "hosts").is_dir() else []:
        try:
            claim = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if start_time(int(claim["pid"])) == claim.get("start"):
            out.append(f.stem)
    return out


def prepare(p: Paths, name: str, image_root: Path, pubkey: str) -> None:
    """Mount the host's overlay root and (re)write its per-host files. Idempotent."""
    d = p.host_dir(name)
    step = "prepare root"
    for sub in ("upper", "work", "root"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    lower_file = d / "lower"
    if not lower_file.exists():
        lower_file.write_text(str(image_root) + "\n")
    lower = Path(lower_file.read_text().strip())
    if not lower.is_dir():
        raise LabError(step, f"its image {lower} is gone from the image cache",
                       f"`python3 -m lab destroy {name}` then `up` (its changes are lost)", name)
    if lower != image_root:
        say(f"{name}: keeps the older image it was created from (destroy it to use the new one)")
    root = d / "root"
    if not is_mounted(root):
        opts = f"lowerdir={lower},upperdir={d / 'upper'},workdir={d / 'work'}"
        run(["mount", "-t", "overlay", f"hftlab-{name}", "-o", opts, str(root)], step,
            name, "check `dmesg` for overlayfs errors")
    _write_files(root, name, pubkey)
    key = root / "etc/ssh/ssh_host_ed25519_key"
    if not key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{name}", "-f",
             str(key)], "generate host key", name)
    shutil.copyfile(key.with_suffix(".pub"), d / "host_key.pub")
    p.archives.joinpath("partial").mkdir(parents=True, exist_ok=True)


def _write_files(root: Path, name: str, pubkey: str) -> None:
    etc = root / "etc"
    (etc / "hostname").write_text(name + "\n")
    hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    hosts += "".join(f"{addr}\t{n}\n" for n, addr in config.ALL_HOSTS.items())
    hosts += f"{config.GATEWAY}\thftlab-gateway\n"
    (etc / "hosts").write_text(hosts)
    net = etc / "systemd" / "network"
    net.mkdir(parents=True, exist_ok=True)
    # Sorts before systemd's own 80-container-host0.network (DHCP), so this one wins.
    (net / "10-host0.network").write_text(
        "[Match]\nName=host0\n\n[Network]\n"
        f"Address={config.HOSTS[name]}/{config.PREFIX_LEN}\nLinkLocalAddressing=no\n"
        "IPv6AcceptRA=no\n")
    mid = etc / "machine-id"
    if not mid.exists() or not mid.read_text().strip():
        mid.write_text(uuid.uuid4().hex + "\n")
    ssh_dir = root / "root" / ".ssh"
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    ssh_dir.chmod(0o700)
    auth = ssh_dir / "authorized_keys"
    auth.write_text(pubkey.strip() + "\n")
    auth.chmod(0o600)


def nspawn_argv(p: Paths, name: str) -> list[str]:
    return ["systemd-nspawn", "--quiet", "-D", str(p.host_dir(name) / "root"), "-b",
            f"--machine={name}", "--register=no", "--keep-unit", "--private-users=no",
            f"--network-bridge={config.BRIDGE}", "--resolv-conf=off", "--timezone=off",
            "--link-journal=no", "--console=read-only",
            # mlock() beyond RLIMIT_MEMLOCK: the lab cannot raise that limit (no
            # CAP_SYS_RESOURCE on these machines), and trading processes lock their memory.
            "--capability=CAP_IPC_LOCK",
            f"--bind={p.archives}:/var/cache/apt/archives"]


def start(p: Paths, name: str) -> int:
    """Start the container detached; record its PID and claim the host name machine-wide."""
    d = p.host_dir(name)
    log = d / "console.log"
    if log.exists() and log.stat().st_size > 4 << 20:
        log.replace(d / "console.log.old")
    pid = spawn_detached(cgroups.wrap(name, nspawn_argv(p, name)), log, d / "nspawn.pid")
    claim = claim_path(p, name)
    claim.parent.mkdir(parents=True, exist_ok=True)
    claim.write_text(json.dumps({"home": str(p.home), "pid": pid, "start": start_time(pid)}))
    return pid


def console_tail(p: Paths, name: str, lines: int = 6) -> str:
    try:
        text = (p.host_dir(name) / "console.log").read_text(errors="replace")
    except OSError:
        return ""
    return " | ".join(text.strip().splitlines()[-lines:])


def stop(p: Paths, name: str) -> None:
    """Shut the container down (SIGTERM makes nspawn halt systemd cleanly), unmount its root."""
    d = p.host_dir(name)
    other = claimed_by_other(p, name)
    if config.kind(name) == "vm":
        vm.stop(p, name, keep_tap=other is not None)
        if other is None:
            claim_path(p, name).unlink(missing_ok=True)
        return
    if running_pid(p, name) is not None:
        say(f"{name}: shutting down")
        if stop_tracked(d / "nspawn.pid", signal.SIGTERM, timeout=30):
            say(f"{name}: did not halt within 30s, killed")
    (d / "nspawn.pid").unlink(missing_ok=True)
    if other is None:  # the name, its claim and its cgroups are ours, not another home's
        claim_path(p, name).unlink(missing_ok=True)
        left = cgroups.remove(name)
        if left:
            say(f"{name}: cgroups still in use, left in place: {' '.join(left)}")
    if is_mounted(d / "root"):
        run(["umount", str(d / "root")], "unmount root", name,
            f"something still uses {d / 'root'}: `fuser -vm {d / 'root'}`")


def destroy(p: Paths, name: str) -> None:
    stop(p, name)
    d = p.host_dir(name)
    if d.exists():
        say(f"{name}: deleting its root and keys")
        shutil.rmtree(d)


def memory_pss_kib(p: Paths, name: str) -> int | None:
    """Sum of PSS over the container's processes (those in its PID namespace), or QEMU's."""
    if config.kind(name) == "vm":
        return vm.memory_pss_kib(p, name)
    pid = running_pid(p, name)
    if pid is None:
        return None
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if not children:
            return None
        ns_link = str(Path(f"/proc/{children[0]}/ns/pid").readlink())
    except OSError:
        return None
    total = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if str((proc / "ns" / "pid").readlink()) != ns_link:
                continue
            for line in (proc / "smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total
