"""The bridge ``hftlab0`` and the apt proxy on it: machine-wide, shared by every lab home.

Lab hosts have no route out (no forwarding, no NAT: the lab must never send traffic beyond
198.18.0.0/24), so apt inside them reaches Debian's mirror through tinyproxy listening on the
bridge address only. The bridge, its address and the proxy port are one per machine, so their
state lives in /run/hftlab and is torn down only when no container is attached any more;
that lets a test lab home and a developer's lab run side by side without destroying each other.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from lab import config, mirror
from lab.errors import LabError
from lab.sysutil import run, say, spawn_detached, stop_tracked, tracked_pid

SYS_NET = Path("/sys/class/net")


def bridge_exists() -> bool:
    return (SYS_NET / config.BRIDGE).exists()


def bridge_ports() -> list[str]:
    """Interfaces (container veths) currently attached to the bridge."""
    d = SYS_NET / config.BRIDGE / "brif"
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def ensure_bridge() -> None:
    """Create ``hftlab0`` with 198.18.0.1/24 if absent; make sure it is up."""
    step = f"create bridge {config.BRIDGE}"
    cidr = f"{config.GATEWAY}/{config.PREFIX_LEN}"
    if not bridge_exists():
        say(f"network: creating bridge {config.BRIDGE} {cidr}")
        run(["ip", "link", "add", config.BRIDGE, "type", "bridge"], step)
    addrs = run(["ip", "-o", "-4", "addr", "show", "dev", config.BRIDGE], step).stdout
    if cidr not in addrs:
        run(["ip", "addr", "add", cidr, "dev", config.BRIDGE], step,
            hint=f"is {config.SUBNET} already used by another interface? `ip -br addr`")
    run(["ip", "link", "set", config.BRIDGE, "up"], step)


def remove_bridge_if_unused() -> None:
    if bridge_exists() and not bridge_ports():
        say(f"network: removing bridge {config.BRIDGE}")
        run(["ip", "link", "del", config.BRIDGE], f"remove bridge {config.BRIDGE}")


def _proxy_conf(run_dir: Path) -> str:
    allow = mirror.find(config.SUITE).hosts()
    extra = os.environ.get("HFT_LAB_PROXY_ALLOW", "")
    allow += [h.strip() for h in extra.split(",") if h.strip()]
    (run_dir / "proxy-allow").write_text("".join(f"{h}\n" for h in allow))
    return (
        "# hft lab apt proxy: bridge address only, lab subnet only, Debian mirror only.\n"
        "User tinyproxy\nGroup tinyproxy\n"
        f"Port {config.PROXY_PORT}\nListen {config.GATEWAY}\nBindSame no\n"
        "Timeout 600\nMaxClients 100\nLogLevel Notice\n"
        f"Allow {config.SUBNET}\n"
        f'Filter "{run_dir / "proxy-allow"}"\nFilterType fnmatch\nFilterDefaultDeny Yes\n'
        "DisableViaHeader Yes\nConnectPort 443\n")


def proxy_listening() -> bool:
    """Whether a socket listens on 198.18.0.1:3128 (read from /proc, without connecting)."""
    addr = socket.inet_aton(config.GATEWAY)[::-1].hex().upper()
    want = f"{addr}:{config.PROXY_PORT:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] in (want, f"00000000:{config.PROXY_PORT:04X}") and fields[3] == "0A":
            return True
    return False


def ensure_proxy(run_dir: Path) -> None:
    """Start tinyproxy on 198.18.0.1:3128 unless the lab's proxy already runs."""
    record = run_dir / "proxy.pid"
    if tracked_pid(record) is not None:
        return
    if proxy_listening():
        raise LabError("start apt proxy", f"something else listens on {config.GATEWAY}:"
                       f"{config.PROXY_PORT}", "find it with `ss -ltnp` and stop it")
    conf = run_dir / "tinyproxy.conf"
    conf.write_text(_proxy_conf(run_dir))
    say(f"network: starting apt proxy {config.PROXY_URL}")
    spawn_detached(["tinyproxy", "-d", "-c", str(conf)], run_dir / "proxy.log", record)
    deadline = time.monotonic() + 10
    while not proxy_listening():
        if tracked_pid(record) is None or time.monotonic() > deadline:
            tail = (run_dir / "proxy.log").read_text(errors="replace").strip()[-400:]
            raise LabError("start apt proxy", f"tinyproxy did not come up: {tail}",
                           f"see {run_dir / 'proxy.log'}")
        time.sleep(0.1)


def stop_proxy(run_dir: Path) -> None:
    if tracked_pid(run_dir / "proxy.pid") is not None:
        say("network: stopping apt proxy")
    stop_tracked(run_dir / "proxy.pid", timeout=5)


def teardown_if_unused(run_dir: Path) -> None:
    """Stop the proxy and remove the bridge once no container of any lab home is attached."""
    if bridge_ports():
        say(f"network: {config.BRIDGE} kept: interfaces {' '.join(bridge_ports())} still "
            "attached; `python3 -m lab destroy` again once they are gone")
        return
    stop_proxy(run_dir)
    remove_bridge_if_unused()
