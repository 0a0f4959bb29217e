"""The verbs of ``python3 -m lab``: up, status, ssh, inventory, stop, destroy, check.

Each verb is idempotent and safe to repeat: ``up`` starts only what is not running, ``stop``
and ``destroy`` leave nothing of this lab home behind, and the shared bridge and proxy go away
only when no lab host of any lab home still uses them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from lab import accel, config, hosts, image, inventory, network, prereq, sshc, vm, vmimage
from lab.config import Paths
from lab.errors import LabError
from lab.sysutil import locked, say

BOOT_TIMEOUT = float(os.environ.get("HFT_LAB_BOOT_TIMEOUT", "240"))
# A VM under TCG boots in a minute or two, more while other builds load the machine.
VM_BOOT_TIMEOUT = float(os.environ.get("HFT_LAB_VM_BOOT_TIMEOUT", "900"))


def _names(args: list[str], default: list[str]) -> list[str]:
    unknown = [n for n in args if n not in config.ALL_HOSTS]
    if unknown:
        raise LabError("parse arguments", f"unknown host(s) {', '.join(unknown)}",
                       f"hosts are: {' '.join(config.HOSTS)} (containers), "
                       f"{' '.join(config.VM_HOSTS)} (vm)")
    return list(dict.fromkeys(args)) if args else default


def _refresh_known_hosts(p: Paths) -> None:
    keys = {n: (config.ALL_HOSTS[n], k) for n in hosts.created(p)
            if (k := hosts.host_key(p, n)) is not None}
    sshc.write_known_hosts(p, keys)


def cmd_up(p: Paths, names: list[str]) -> None:
    prereq.require(vm=any(config.kind(n) == "vm" for n in names))
    _check_claims(p, names)  # before the image build: refuse early, change nothing
    t0 = time.monotonic()
    root = image.ensure(p.image_cache)
    vms = [n for n in names if config.kind(n) == "vm"]
    vm_image = vmimage.ensure(p.image_cache, p.run) if vms else None
    pub = sshc.ensure_keypair(p).with_suffix(".pub").read_text()
    p.archives.mkdir(parents=True, exist_ok=True)
    started: dict[str, float] = {}
    with locked(p.run / "lock"):
        _check_claims(p, names)
        network.ensure_bridge()
        network.ensure_proxy(p.run)
        for name in names:
            if hosts.running_pid(p, name) is not None:
                continue
            if config.kind(name) == "vm":
                assert vm_image is not None
                acc = accel.choose(p.run, vm_image / "vmlinuz")
                vm.prepare(p, name, vm_image, pub)
                vm.start(p, name, acc, hosts.claim_path(p, name))
                say(f"{name}: booting VM {config.ALL_HOSTS[name]} ({acc.name}, "
                    f"{vm.MEMORY_MIB} MiB, {vm.CPUS} CPU)")
            else:
                hosts.prepare(p, name, root, pub)
                hosts.start(p, name)
                say(f"{name}: booting {config.HOSTS[name]}")
            started[name] = time.monotonic()
        _refresh_known_hosts(p)
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        states = list(pool.map(lambda n: _wait(p, n, started.get(n, time.monotonic())), names))
    bad = [(n, s) for n, s in zip(names, states) if s not in ("running", "degraded")]
    if bad:
        n, s = bad[0]
        raise LabError("boot", s, f"console log: {p.host_dir(n) / 'console.log'}; "
                       f"`python3 -m lab destroy {n}` and `up` again to start over", n)
    say(f"up: {len(names)} host(s) ready in {time.monotonic() - t0:.1f}s")


def _check_claims(p: Paths, names: list[str]) -> None:
    for name in names:
        other = hosts.claimed_by_other(p, name)
        if other:
            raise LabError("claim host", f"it is running from another lab home ({other})",
                           f"stop it there: HFT_LAB_HOME={other} python3 -m lab stop {name}",
                           name)


def _wait(p: Paths, name: str, since: float) -> str:
    """Poll until systemd in the host says running/degraded over SSH; return the state."""
    timeout = VM_BOOT_TIMEOUT if config.kind(name) == "vm" else BOOT_TIMEOUT
    deadline = since + timeout
    last = ""
    while True:
        if hosts.running_pid(p, name) is None:
            return f"{config.kind(name)} exited: {hosts.console_tail(p, name)}"
        ok, state = sshc.system_state(p, config.ALL_HOSTS[name])
        if ok and state in ("running", "degraded"):
            extra = ""
            if state == "degraded":
                extra = " (failed units: " + _failed_units(p, name) + ")"
            say(f"{name}: {state} after {time.monotonic() - since:.1f}s{extra}")
            return state
        if ok and state not in ("initializing", "starting"):
            return f"systemd state {state!r}"
        last = state if ok else f"ssh: {state}"
        if time.monotonic() > deadline:
            return f"not ready after {timeout:.0f}s (last: {last})"
        time.sleep(0.5 if config.kind(name) == "container" else 2)


def _failed_units(p: Paths, name: str) -> str:
    proc = subprocess.run(sshc.argv(p, config.ALL_HOSTS[name], ["systemctl", "--failed",
                          "--no-legend", "--plain"]), capture_output=True, text=True)
    return ", ".join(line.split()[0] for line in proc.stdout.splitlines() if line.strip())


def _stop_many(p: Paths, names: list[str], destroy: bool) -> None:
    prereq.require()
    with locked(p.run / "lock"):
        action = hosts.destroy if destroy else hosts.stop
        with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
            list(pool.map(lambda n: action(p, n), names))
        _refresh_known_hosts(p)
        deadline = time.monotonic() + 30
        while network.bridge_ports() and not hosts.live_claims(p) and \
                time.monotonic() < deadline:
            time.sleep(0.1)  # veths disappear a moment after their container exits
        if not hosts.live_claims(p):
            network.teardown_if_unused(p.run)
        else:
            say(f"network: bridge and proxy kept, still used by {' '.join(hosts.live_claims(p))}")


def cmd_status(p: Paths) -> None:
    prereq.require()
    names = hosts.created(p)
    if not names:
        print(f"no lab hosts in {p.home}; start some with `python3 -m lab up [HOST...]`")
        return

    def row(name: str) -> list[str]:
        running = hosts.running_pid(p, name) is not None
        ok, state = sshc.system_state(p, config.ALL_HOSTS[name]) if running else (False, "stopped")
        mem = hosts.memory_pss_kib(p, name)
        kind = config.kind(name)
        if kind == "vm" and running:
            kind = f"vm ({vm.started_with(p, name).get('accel', '?')})"
        return [name, config.ALL_HOSTS[name], kind,
                state if ok or not running else "not answering",
                "yes" if ok else "no", f"{mem / 1024:.0f} MiB" if mem else "-"]

    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        rows = list(pool.map(row, names))
    head = ["HOST", "ADDRESS", "KIND", "SYSTEMD", "SSH", "MEMORY(PSS)"]
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    for r in [head] + rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    extra = "up" if network.bridge_exists() else "down"
    print(f"bridge {config.BRIDGE} {extra}; proxy "
          f"{'listening' if network.proxy_listening() else 'not running'} on {config.PROXY_URL}")


def cmd_ssh(p: Paths, name: str, command: list[str]) -> None:
    _names([name], [])
    if name not in hosts.created(p) or hosts.host_key(p, name) is None:
        raise LabError("ssh", "host not created in this lab home", f"python3 -m lab up {name}",
                       name)
    tty = not command and sys.stdin.isatty()
    argv = sshc.argv(p, config.ALL_HOSTS[name], command, tty=tty)
    if not command:
        argv = argv[:-1]  # no "--" without a command: an interactive login shell
    os.execvp(argv[0], argv)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m lab", description=__doc__)
    sub = ap.add_subparsers(dest="verb", required=True)
    for verb, helptext in [("up", "build image if needed, start hosts, wait until ready"),
                           ("stop", "shut hosts down, keeping their disks"),
                           ("destroy", "stop hosts and delete their disks and keys")]:
        sp = sub.add_parser(verb, help=helptext)
        sp.add_argument("hosts", nargs="*", metavar="HOST")
    sub.add_parser("status", help="table of hosts: address, systemd state, SSH, memory")
    sub.add_parser("inventory", help="JSON description of the lab on stdout")
    sub.add_parser("check", help="check prerequisites only")
    sp = sub.add_parser("ssh", help="run a command (or a shell) on a host")
    sp.add_argument("host")
    sp.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    p = config.paths()
    try:
        if args.verb == "up":
            cmd_up(p, _names(args.hosts, list(config.HOSTS)))  # VMs only when named
        elif args.verb in ("stop", "destroy"):
            cmd_names = _names(args.hosts, hosts.created(p))
            _stop_many(p, cmd_names, destroy=args.verb == "destroy")
        elif args.verb == "status":
            cmd_status(p)
        elif args.verb == "inventory":
            json.dump(inventory.build(p), sys.stdout, indent=2)
            print()
        elif args.verb == "check":
            prereq.require(vm=True)
            print("lab: prerequisites present")
        elif args.verb == "ssh":
            cmd_ssh(p, args.host, args.command)
    except LabError as exc:
        print(exc.render(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
