"""HostBaseline: the OS tuning and packages every trading host gets (runbook 3.2, 3.3).

One step per runbook concern, so a change re-runs only the step it belongs to: the apt
upgrade (3.2 step 1: at first provisioning, then only when ``aptUpgrade.requested`` changes,
never as a side effect of another edit on a host that is trading), limits (step 3), sysctl
(step 3), the CPU governor (step 4), disabled services (step 5) and build tools and libraries
(3.3 steps 1-2). On a container host (the lab) the sysctl file is still written, so it can be
inspected, but applying it and the governor are skipped: the kernel is this machine's. The
``kernel_steps`` output is what each step reported from the host.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import pulumi

from components.reader import (BOOL, LIMIT_VALUE, PACKAGE, SYSCTL_KEY, SYSCTL_VALUE, UNIT_NAME, ListOf, MapOf,
                               Section, choice, pattern, setting)
from components.remote import Step, managed_file
from components.reports import report_from_stdout
from components.server import Server

GOVERNORS = ("performance", "powersave", "ondemand", "schedutil", "conservative", "userspace")
# Units the deploy itself depends on: disabling one locks the deployer out or stops trading.
PROTECTED_SERVICES = ("ssh", "sshd", "systemd-journald", "systemd-logind", "systemd-networkd", "networking",
                      "dbus", "cron", "postgresql", "prometheus", "prometheus-node-exporter", "hft_system")


# Runbook values that look like sysctls but are not: `sysctl -p` would fail on a real kernel.
NOT_SYSCTLS = {"net.ipv4.tcp_nodelay": "TCP_NODELAY is a per-socket option the program sets, not a Linux "
                                       "sysctl; hft_system sets it on its sockets"}


@dataclass(frozen=True)
class Limit:
    """One line of limits.d (runbook 3.2 step 3)."""
    domain: str = setting("domain", pattern(r"[a-z_][a-z0-9_-]{0,31}|@[a-z_][a-z0-9_-]{0,31}|\*",
                                            "a user, @group or *"), "who the limit applies to")
    type: str = setting("type", choice("soft", "hard", "-"), "soft, hard or both (-)")
    item: str = setting("item", choice("nofile", "memlock", "rtprio", "nproc", "core", "stack", "priority"),
                        "the limited resource")
    value: str = setting("value", LIMIT_VALUE, "the limit")


@dataclass(frozen=True)
class AptUpgrade:
    """Runbook 3.2 step 1, as its own step."""
    enabled: bool = setting("enabled", BOOL, "run `apt-get upgrade` at first provisioning", "3.2 step 1",
                            lab="false: keeps the lab's first up bounded")
    requested: str = setting("requested", pattern(r"[A-Za-z0-9._-]{1,40}", "a label, e.g. a date"),
                             "change this label to run the upgrade again (and only then)", "3.2 step 1")


def _not_protected(services: tuple[str, ...]) -> bool | str:
    bad = [s for s in services if s.removesuffix(".service").split("@")[0] in PROTECTED_SERVICES]
    return True if not bad else (f"no service the deploy depends on ({', '.join(bad)} may not be disabled; "
                                 f"protected: {', '.join(PROTECTED_SERVICES)})")


@dataclass(frozen=True)
class BaselineSettings:
    """Host tuning and packages (runbook 3.2, 3.3)."""
    apt_upgrade: AptUpgrade = setting("aptUpgrade", Section(AptUpgrade), "apt upgrade policy", "3.2 step 1")
    limits: tuple[Limit, ...] = setting("limits", ListOf(Section(Limit)), "limits.d lines", "3.2 step 3")
    sysctl: dict = setting("sysctl", MapOf(SYSCTL_KEY, SYSCTL_VALUE), "sysctl.d values", "3.2 step 3")
    apply_sysctl: bool = setting("applySysctl", BOOL, "apply sysctl values to the running kernel", "3.2 step 3")
    cpu_governor: Optional[str] = setting("cpuGovernor", choice(*GOVERNORS), "CPU frequency governor",
                                          "3.2 step 4", optional=True)
    disabled_services: tuple[str, ...] = setting("disabledServices", ListOf(UNIT_NAME, unique=True),
                                                 "units to disable and stop", "3.2 step 5")
    gcc_version: Optional[str] = setting("gccVersion", pattern(r"\d{1,2}", "a gcc major version"),
                                         "gcc/g++ alternatives target", "3.3 step 1", optional=True)
    packages: tuple[str, ...] = setting("packages", ListOf(PACKAGE, unique=True), "build tools and libraries",
                                        "3.3 steps 1-2")

    def check(self, path: str) -> list[str]:
        out = []
        verdict = _not_protected(self.disabled_services)
        if verdict is not True:
            out.append(f"hft:{path}.disabledServices = {list(self.disabled_services)}: expected {verdict}")
        for key, why in NOT_SYSCTLS.items():
            if key in self.sysctl:
                out.append(f"hft:{path}.sysctl.{key} = {self.sysctl[key]!r}: expected no such key ({why})")
        return out


def render_limits(b: BaselineSettings) -> str:
    return managed_file("3.2 step 3", [f"{x.domain} {x.type} {x.item} {x.value}" for x in b.limits])


def render_sysctl(b: BaselineSettings) -> str:
    return managed_file("3.2 step 3", [f"{key}={value}" for key, value in b.sysctl.items()])


@dataclass
class HostBaselineArgs:
    server: Server
    """The host to tune."""
    baseline: BaselineSettings
    """What to apply."""


class HostBaseline(pulumi.ComponentResource):
    """apt upgrade, limits, sysctl, governor, disabled services, build tools and libraries: one step each."""

    kernel_steps: pulumi.Output[dict]
    ready: pulumi.Resource

    def __init__(self, name: str, args: HostBaselineArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("hft:host:HostBaseline", name, None, opts)
        b, server = args.baseline, args.server
        container = server.host.container
        skip_reason = "container host" if container else "disabled in config"
        conn, after = server.connection, [server.ready]

        def step(concern: str, script: str, env: dict[str, str], files: Optional[dict[str, str]] = None,
                 depends_on: Any = None) -> Any:
            s = Step(f"{name}-{concern}", script, env, files)
            return s, s.create(conn, self, depends_on=depends_on or after)

        upgrade = step("apt-upgrade", "apt_upgrade.sh", {
            "HFT_APT_UPGRADE": "1" if b.apt_upgrade.enabled else "0",
            "HFT_APT_UPGRADE_REQUESTED": b.apt_upgrade.requested})
        limits = step("limits", "limits.sh", {}, {"limits.conf": render_limits(b)})
        sysctl = step("sysctl", "sysctl.sh", {
            "HFT_APPLY_SYSCTL": "1" if b.apply_sysctl and not container else "0",
            "HFT_KERNEL_SKIP_REASON": skip_reason}, {"sysctl.conf": render_sysctl(b)})
        governor = step("cpu-governor", "governor.sh", {
            "HFT_CPU_GOVERNOR": "" if container or not b.cpu_governor else b.cpu_governor,
            "HFT_KERNEL_SKIP_REASON": skip_reason})
        services = step("services", "services.sh", {"HFT_DISABLED_SERVICES": " ".join(b.disabled_services)})
        packages = step("packages", "packages.sh", {
            "HFT_PACKAGES": " ".join(b.packages), "HFT_GCC_ALTERNATIVES": b.gcc_version or ""},
            depends_on=[upgrade[1]])
        steps = [upgrade, limits, sysctl, governor, services, packages]
        self.steps = {s.name: s for s, _ in steps}
        self.fingerprints = {s.name: s.fingerprint for s, _ in steps}
        self.ready = packages[1]
        self.after_all = [c for _, c in steps]
        sysctl_report = report_from_stdout(sysctl[1].stdout, "HFT_SYSCTL_REPORT")
        governor_report = report_from_stdout(governor[1].stdout, "HFT_GOVERNOR_REPORT")
        self.kernel_steps = pulumi.Output.all(sysctl_report, governor_report).apply(lambda r: {
            "sysctl_apply": r[0].get("status", "no report"),
            "hugepages": r[0].get("hugepages", "no report"),
            "cpu_governor": r[1].get("status", "no report")})
        self.register_outputs({"kernel_steps": self.kernel_steps})
