"""HostBaseline: the OS tuning and packages every trading host gets (runbook 3.2, 3.3).

limits.d and sysctl.d files are rendered from stack config. On a container host (the lab)
the files are still written, so they can be inspected, but applying sysctl and the CPU
governor is skipped: the kernel is this machine's and cannot be changed from inside. The
``kernel_steps`` output says so instead of claiming it was done.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi

from components.config import Baseline
from components.remote import Step, managed_file
from components.server import Server

SKIPPED = "skipped: container host"


def render_limits(baseline: Baseline) -> str:
    return managed_file("3.2 step 3", [f"{x.domain} {x.type} {x.item} {x.value}" for x in baseline.limits])


def render_sysctl(baseline: Baseline) -> str:
    return managed_file("3.2 step 3", [f"{key}={value}" for key, value in baseline.sysctl.items()])


@dataclass
class HostBaselineArgs:
    server: Server
    baseline: Baseline


class HostBaseline(pulumi.ComponentResource):
    """apt policy, limits, sysctl, governor, disabled services, build tools and libraries."""

    kernel_steps: pulumi.Output[dict]

    def __init__(self, name: str, args: HostBaselineArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("hft:host:HostBaseline", name, None, opts)
        b, container = args.baseline, args.server.host.container
        apply_sysctl = b.apply_sysctl and not container
        governor = "" if container or not b.cpu_governor else b.cpu_governor
        step = Step(f"{name}-baseline", "baseline.sh", {
            "HFT_APT_UPGRADE": "1" if b.apt_upgrade else "0",
            "HFT_APPLY_SYSCTL": "1" if apply_sysctl else "0",
            "HFT_CPU_GOVERNOR": governor,
            "HFT_DISABLED_SERVICES": " ".join(b.disabled_services),
            "HFT_PACKAGES": " ".join(b.packages),
            "HFT_GCC_ALTERNATIVES": b.gcc_version or "",
            "HFT_KERNEL_SKIP_REASON": "container host" if container else "disabled in config",
        }, {"limits.conf": render_limits(b), "sysctl.conf": render_sysctl(b)})
        self.fingerprint = step.fingerprint
        self.command = step.create(
            args.server.connection, self, depends_on=[args.server.ready])
        steps = {
            "sysctl_apply": SKIPPED if container else ("applied" if apply_sysctl else "disabled in config"),
            "cpu_governor": SKIPPED if container else (b.cpu_governor or "disabled in config"),
            "hugepages": SKIPPED if container else f"vm.nr_hugepages={b.sysctl.get('vm.nr_hugepages', 'unset')}",
        }
        self.kernel_steps = pulumi.Output.from_input(steps)
        self.register_outputs({"kernel_steps": self.kernel_steps})
