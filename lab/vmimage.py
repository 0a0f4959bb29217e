"""Build and cache the disk image that lab VMs boot: the container image plus a kernel and GRUB.

The root tree is the cached container image (lab/image.py) copied, with Debian's
``linux-image-amd64``, ``grub-pc`` and what a real boot needs (udev, kmod, initramfs-tools)
installed into it by apt in a chroot. It becomes an ext4 file system on one MBR partition
(``mkfs.ext4 -d`` at a 1 MiB offset: no loop devices), then a qcow2 file. GRUB is installed the
way a real server gets it: the image is booted once in QEMU with its own kernel (direct kernel
boot) and ``init=`` a script that runs ``grub-install /dev/vda`` and ``update-grub`` and powers
off. From then on the disk boots through GRUB like any BIOS machine, so installing another
kernel (``apt install linux-image-rt-amd64``) and rebooting boots that kernel: its postinst
runs update-grub, and Debian's GRUB menu defaults to the highest version.

Keyed like the container image, by a hash of the recipe below plus the container image's own
hash; each VM then gets a qcow2 overlay whose backing file is ``disk.qcow2`` here.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from lab import accel, config, image, mirror
from lab.errors import LabError
from lab.sysutil import locked, run, say

VM_RECIPE_VERSION = 1
PACKAGES = ["linux-image-amd64", "grub-pc", "udev", "kmod", "initramfs-tools", "zstd",
            "e2fsprogs"]
DISK_GIB = 8
PART_OFFSET = 1 << 20  # partition 1 starts at sector 2048: room for GRUB's core.img before it
ROOT_LABEL = "hftroot"
SEED_LABEL = "HFTSEED"
BOOTLOADER_OK = "HFTLAB-BOOTLOADER-OK"

SEED_SCRIPT = f"""#!/bin/sh
# hft lab: copy this VM's own files (hostname, address, host key, lab key) from the seed disk
# the lab attaches (label {SEED_LABEL}), on every boot, before networking and sshd start.
set -eu
dir=/run/hftlab-seed
mkdir -p "$dir"
mount -o ro LABEL={SEED_LABEL} "$dir"
cp -a "$dir/root/." /
umount "$dir"
rmdir "$dir"
hostname -F /etc/hostname
"""

SEED_UNIT = f"""[Unit]
Description=hft lab: per-host files from the seed disk
DefaultDependencies=no
Requires=dev-disk-by\\x2dlabel-{SEED_LABEL}.device
After=dev-disk-by\\x2dlabel-{SEED_LABEL}.device local-fs.target
Before=network-pre.target systemd-networkd.service ssh.service sysinit.target
Wants=network-pre.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/hftlab-seed

[Install]
WantedBy=sysinit.target
"""

# The lab home's apt-archives, shared over 9p like the containers' bind mount; nofail: apt
# simply downloads again if the share is missing.
APT_MOUNT = """[Unit]
Description=hft lab: shared apt archives (9p)
ConditionVirtualization=vm

[Mount]
What=hftapt
Where=/var/cache/apt/archives
Type=9p
Options=trans=virtio,version=9p2000.L,msize=262144,nofail

[Install]
WantedBy=local-fs.target
"""

BOOTLOADER_SCRIPT = f"""#!/bin/sh
# Runs once, as init, while the lab builds the VM image: GRUB onto /dev/vda, then power off.
# It re-executes itself from /run first, so that deleting it leaves no open file on / and /
# can be remounted read-only before the power-off (a clean file system, no journal replay).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sys /sys
mountpoint -q /dev || mount -t devtmpfs dev /dev
if [ "$0" != /run/hftlab-install-bootloader ]; then
  mountpoint -q /run || mount -t tmpfs tmp /run
  cp "$0" /run/hftlab-install-bootloader
  exec /bin/sh /run/hftlab-install-bootloader
fi
mount -o remount,rw /
if grub-install --target=i386-pc /dev/vda && update-grub; then
  echo "grub-pc grub-pc/install_devices multiselect /dev/vda" | debconf-set-selections
  echo "grub-pc grub-pc/install_devices_empty boolean false" | debconf-set-selections
  ok={BOOTLOADER_OK}
else
  ok=HFTLAB-BOOTLOADER-FAILED
fi
rm -f /usr/local/sbin/hftlab-install-bootloader
sync
mount -o remount,ro / || ok="$ok (/ stayed read-write)"
echo "$ok"
python3 -c 'import ctypes; ctypes.CDLL(None).reboot(0x4321fedc)'
"""

FILES: dict[str, str] = {
    "/etc/fstab": f"LABEL={ROOT_LABEL} / ext4 errors=remount-ro 0 1\n",
    "/etc/default/grub.d/10-hftlab.cfg": (
        "# hft lab: the serial console is the VM's console.log; a short menu.\n"
        "GRUB_TIMEOUT=1\n"
        'GRUB_CMDLINE_LINUX="console=ttyS0,115200n8 panic=10"\n'
        'GRUB_CMDLINE_LINUX_DEFAULT=""\n'
        'GRUB_TERMINAL="serial console"\n'
        'GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"\n'),
    "/usr/local/sbin/hftlab-seed": SEED_SCRIPT,
    "/etc/systemd/system/hftlab-seed.service": SEED_UNIT,
    "/etc/systemd/system/var-cache-apt-archives.mount": APT_MOUNT,
    "/usr/local/sbin/hftlab-install-bootloader": BOOTLOADER_SCRIPT,
}
# Written after the chroot install (whose initrd must hold every module: "dep" would look at
# this machine's hardware): a kernel installed later inside the VM (the RT kernel) gets an
# initrd of the modules this VM uses. Under TCG, mkinitramfs with Debian's default
# MODULES=most took 4-5 minutes of the RT kernel's install.
AFTER_INSTALL: dict[str, str] = {
    "/etc/initramfs-tools/conf.d/10-hftlab": "# hft lab VM: small initrds, built fast\nMODULES=dep\n",
}
EXECUTABLE = {"/usr/local/sbin/hftlab-seed", "/usr/local/sbin/hftlab-install-bootloader"}
ENABLE = ["hftlab-seed.service", "var-cache-apt-archives.mount"]


def recipe() -> dict[str, object]:
    return {"version": VM_RECIPE_VERSION, "base": image.recipe_hash(image.recipe()),
            "packages": PACKAGES, "files": FILES, "after_install": AFTER_INSTALL,
            "enable": ENABLE, "disk_gib": DISK_GIB}


def ensure(cache: Path, run_dir: Path) -> Path:
    """The cached VM image directory (``disk.qcow2``, ``vmlinuz``), built if needed."""
    r = recipe()
    h = image.recipe_hash(r)
    entry = cache / f"vm-{h}"
    if (entry / "complete").exists():
        return entry
    base = image.ensure(cache)
    with locked(cache / ".lock-vm"):
        if not (entry / "complete").exists():
            _build(r, h, cache, base, run_dir)
    return entry


def _chroot_script(root: Path, debs: Path, hosts: list[str]) -> str:
    direct = " ".join(f"-o Acquire::http::Proxy::{h}=DIRECT" for h in hosts)
    return f"""set -e
R={root}
mount --bind /dev "$R/dev"
mount -t proc proc "$R/proc"
mount -t sysfs sys "$R/sys"
mount --bind {debs} "$R/var/cache/apt/archives"
mount --bind /etc/resolv.conf "$R/etc/resolv.conf"
export DEBIAN_FRONTEND=noninteractive
printf '%s\\n' 'grub-pc grub-pc/install_devices multiselect' \\
  'grub-pc grub-pc/install_devices_empty boolean true' | chroot "$R" debconf-set-selections
chroot "$R" apt-get {direct} -q update
chroot "$R" apt-get {direct} -q -y install {' '.join(PACKAGES)}
"""


def _build(r: dict[str, object], h: str, cache: Path, base: Path, run_dir: Path) -> None:
    entry = cache / f"vm-{h}"
    tmp = cache / f"vm-{h}.building"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    t0 = time.monotonic()
    log = tmp / "build.log"
    tree = tmp / "tree"
    say(f"vm image {h}: copying the container image {base.parent.name}")
    run(["cp", "-a", str(base), str(tree)], "build VM image (copy root)")
    debs = cache / "vm-debs"
    (debs / "partial").mkdir(parents=True, exist_ok=True)
    say(f"vm image {h}: apt-get install {' '.join(PACKAGES)} (chroot, a minute or two)")
    hosts = mirror.find(config.SUITE).hosts()
    with open(log, "w") as out:
        # A private mount namespace: the chroot's /dev, /proc, ... go away with the process.
        rc = subprocess.run(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                             _chroot_script(tree, debs, hosts)],
                            stdout=out, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        tail = " | ".join(log.read_text().strip().splitlines()[-4:])
        raise LabError("build VM image (apt in chroot)", f"exit {rc}: {tail}", f"full log: {log}")
    _configure(tree)
    kernels = sorted((tree / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise LabError("build VM image", f"expected one kernel in /boot, found {kernels}")
    version = kernels[0].name.removeprefix("vmlinuz-")
    shutil.copyfile(kernels[0], tmp / "vmlinuz")
    shutil.copyfile(tree / "boot" / f"initrd.img-{version}", tmp / "initrd.img")
    raw = tmp / "disk.raw"
    say(f"vm image {h}: ext4 file system from the tree, {DISK_GIB} GiB disk (sparse)")
    with open(raw, "wb") as f:
        f.truncate(DISK_GIB << 30)
    run(["sfdisk", "-q", str(raw)], "build VM image (partition)",
        input_text=f"start={PART_OFFSET // 512}, type=83, bootable\n")
    run(["mkfs.ext4", "-q", "-L", ROOT_LABEL, "-E", f"offset={PART_OFFSET}", "-d", str(tree),
         str(raw), f"{((DISK_GIB << 30) - PART_OFFSET) >> 10}k"], "build VM image (mkfs.ext4)")
    run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(tmp / "disk.qcow2")],
        "build VM image (qcow2)")
    raw.unlink()
    shutil.rmtree(tree)
    acc = accel.choose(run_dir, tmp / "vmlinuz")
    say(f"vm image {h}: installing GRUB by booting the image once ({acc.name})")
    _install_bootloader(tmp, acc)
    (tmp / "initrd.img").unlink()
    (tmp / "recipe.json").write_text(json.dumps(r, indent=2, sort_keys=True) + "\n")
    (tmp / "kernel").write_text(version + "\n")
    if entry.exists():
        shutil.rmtree(entry)
    os.rename(tmp, entry)
    (entry / "complete").write_text(f"{time.monotonic() - t0:.1f}\n")
    say(f"vm image {h}: built in {time.monotonic() - t0:.0f}s (kernel {version})")


def _configure(tree: Path) -> None:
    for path, content in (FILES | AFTER_INSTALL).items():
        dest = tree / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(content)
        dest.chmod(0o755 if path in EXECUTABLE else 0o644)
    for unit in ENABLE:
        run(["systemctl", f"--root={tree}", "enable", unit], "build VM image (enable units)")
    # Lists and downloaded packages are stale by the time a VM runs; it updates through the proxy.
    for d in ("var/lib/apt/lists", "var/cache/apt/archives"):
        shutil.rmtree(tree / d, ignore_errors=True)
        (tree / d / "partial").mkdir(parents=True)


def _install_bootloader(tmp: Path, acc: accel.Accel) -> None:
    console = tmp / "bootloader-console.log"
    argv = ["qemu-system-x86_64", *acc.qemu_args(), "-m", "1024", "-nodefaults",
            "-display", "none", "-no-reboot", "-serial", f"file:{console}",
            "-drive", f"file={tmp / 'disk.qcow2'},if=virtio,format=qcow2",
            "-kernel", str(tmp / "vmlinuz"), "-initrd", str(tmp / "initrd.img"),
            "-append", f"console=ttyS0 root=LABEL={ROOT_LABEL} ro panic=-1 "
                       "init=/usr/local/sbin/hftlab-install-bootloader"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        raise LabError("build VM image (GRUB)", "the install boot did not finish in 900s",
                       f"console: {console}")
    text = console.read_text(errors="replace") if console.exists() else ""
    if BOOTLOADER_OK not in text:
        tail = " | ".join(text.strip().splitlines()[-4:]) or proc.stderr.strip()
        raise LabError("build VM image (GRUB)", f"grub-install did not succeed: {tail}",
                       f"console: {console}")
