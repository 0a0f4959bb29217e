"""Build and cache the Debian 12 root filesystem every lab host boots from.

debootstrap takes about a minute and a few hundred MB, so the tree is built once and shared
read-only (as the overlay lower layer) by all hosts. The cache is keyed by a hash of the
recipe below: change a package, a config file or the mirror and a new image is built, while
hosts created earlier keep the image they were created from until they are destroyed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from lab import config, mirror
from lab.errors import LabError
from lab.sysutil import locked, run, say

RECIPE_VERSION = 1
VARIANT = "minbase"
PACKAGES = ["systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "sudo",
            "iproute2", "ca-certificates", "procps"]
# Timers that would run apt in the background and hold its lock while a deploy installs.
MASKED_UNITS = ["apt-daily.timer", "apt-daily-upgrade.timer", "apt-daily.service",
                "apt-daily-upgrade.service"]
ENABLED_UNITS = ["systemd-networkd.service", "ssh.service"]


def _files(m: mirror.Mirrors) -> dict[str, str]:
    """Files written into the image after debootstrap, by path inside the image."""
    sources = [f"deb {m.debian} {config.SUITE} main", f"deb {m.debian} {config.SUITE}-updates main"]
    if m.security:
        sources.append(f"deb {m.security} {config.SUITE}-security main")
    return {
        "/etc/apt/sources.list": "\n".join(sources) + "\n",
        "/etc/apt/apt.conf.d/90hftlab": (
            "// Lab hosts have no route out: apt goes through the lab proxy on the bridge.\n"
            f'Acquire::http::Proxy "{config.PROXY_URL}";\n'
            f'Acquire::https::Proxy "{config.PROXY_URL}";\n'
            'Acquire::Languages "none";\n'
            'APT::Install-Recommends "false";\n'
            'APT::Install-Suggests "false";\n'
            "// /var/cache/apt/archives is shared by all lab hosts: keep what was downloaded.\n"
            'APT::Keep-Downloaded-Packages "true";\n'
            'Binary::apt::APT::Keep-Downloaded-Packages "true";\n'),
        "/etc/ssh/sshd_config.d/10-hftlab.conf": (
            "# Lab: key-only root login; each host has its own ed25519 host key.\n"
            "HostKey /etc/ssh/ssh_host_ed25519_key\n"
            "PermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UseDNS no\n"),
        "/etc/resolv.conf": "# Lab hosts have no DNS; apt reaches the mirror through the proxy.\n",
        "/etc/hostname": "localhost\n",
        "/etc/default/locale": "LANG=C.UTF-8\n",
        "/etc/machine-id": "",
        "/etc/systemd/journald.conf.d/10-hftlab.conf": "[Journal]\nSystemMaxUse=32M\n",
    }


def recipe() -> dict[str, object]:
    """Everything that determines the image's content; its hash names the cache entry."""
    m = mirror.find(config.SUITE)
    return {"version": RECIPE_VERSION, "suite": config.SUITE, "variant": VARIANT,
            "packages": PACKAGES, "mirror": m.debian, "security": m.security,
            "files": _files(m), "enable": ENABLED_UNITS, "mask": MASKED_UNITS}


def recipe_hash(r: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(r, sort_keys=True).encode()).hexdigest()[:16]


def ensure(cache: Path) -> Path:
    """Return the root of the cached image for the current recipe, building it if needed."""
    r = recipe()
    h = recipe_hash(r)
    entry = cache / h
    rootfs = entry / "rootfs"
    if (entry / "complete").exists():
        return rootfs
    with locked(cache / ".lock"):
        if (entry / "complete").exists():
            return rootfs
        _build(r, h, cache)
    return rootfs


def _build(r: dict[str, object], h: str, cache: Path) -> None:
    entry = cache / h
    tmp = cache / f"{h}.building"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    debs = cache / "debs"
    debs.mkdir(exist_ok=True)
    say(f"image {h}: debootstrap {config.SUITE} from {r['mirror']} (about a minute)")
    t0 = time.monotonic()
    argv = ["debootstrap", f"--variant={VARIANT}", f"--include={','.join(PACKAGES)}",
            f"--cache-dir={debs}", config.SUITE, str(tmp / "rootfs"), str(r["mirror"])]
    log = tmp / "debootstrap.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        seen: set[str] = set()
        for line in proc.stdout:
            out.write(line)
            words = line.split()
            # Print one progress line per debootstrap phase, not one per package.
            if len(words) >= 2 and words[0] == "I:" and words[1] not in seen:
                seen.add(words[1])
                say(f"image {h}: {line.strip()[3:]}")
        rc = proc.wait()
    if rc != 0:
        tail = " | ".join(log.read_text().strip().splitlines()[-4:])
        raise LabError("build image (debootstrap)", f"exit {rc}: {tail}",
                       f"check network access to {r['mirror']}; full log: {log}")
    _configure(tmp / "rootfs", _files(mirror.find(config.SUITE)))
    (tmp / "recipe.json").write_text(json.dumps(r, indent=2, sort_keys=True) + "\n")
    if entry.exists():
        shutil.rmtree(entry)
    os.rename(tmp, entry)
    (entry / "complete").write_text(f"{time.monotonic() - t0:.1f}\n")
    say(f"image {h}: built in {time.monotonic() - t0:.0f}s")


def _configure(root: Path, files: dict[str, str]) -> None:
    """Write the recipe's files and unit links; drop what must be unique per host."""
    for path, content in files.items():
        dest = root / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_symlink():
            dest.unlink()
        dest.write_text(content)
    for key in (root / "etc" / "ssh").glob("ssh_host_*"):
        key.unlink()  # generated per host on its first `up`
    for unit in ENABLED_UNITS:
        run(["systemctl", f"--root={root}", "enable", unit], "build image (enable units)")
    for unit in MASKED_UNITS:
        run(["systemctl", f"--root={root}", "mask", unit], "build image (mask units)")
    shutil.rmtree(root / "var" / "cache" / "apt" / "archives", ignore_errors=True)
    (root / "var" / "cache" / "apt" / "archives" / "partial").mkdir(parents=True)
