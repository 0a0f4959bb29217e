"""RealtimeKernel: the RT kernel package, a reboot into it, and a `uname -r` check (runbook 3.2 step 2).

A container host shares this machine's kernel, so there the component creates no remote
command at all and its ``status`` output says "skipped: container host".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
from pulumi_command import local

from components.reader import BOOL, PACKAGE, ListOf, pattern, setting
from components.remote import Step
from components.server import Server

SKIPPED = "skipped: container host"


@dataclass(frozen=True)
class RealtimeKernelSettings:
    """Runbook 3.2 step 2."""
    enabled: bool = setting("enabled", BOOL, "install the RT kernel and reboot into it", "3.2 step 2",
                            lab="skipped on container hosts")
    packages: tuple[str, ...] = setting("packages", ListOf(PACKAGE, min_items=1), "RT kernel packages",
                                        "3.2 step 2")
    uname_pattern: str = setting("unamePattern", pattern(r"-[a-z0-9-]{1,30}", "a uname -r fragment like -rt"),
                                 "what `uname -r` shows once the RT kernel runs", "3.2 step 2")


@dataclass
class RealtimeKernelArgs:
    server: Server
    """The host."""
    kernel: RealtimeKernelSettings
    """What to install."""
    after: pulumi.Resource
    """The step the install waits for (the host's packages)."""


class RealtimeKernel(pulumi.ComponentResource):
    status: pulumi.Output[str]
    ready: pulumi.Resource

    def __init__(self, name: str, args: RealtimeKernelArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("hft:host:RealtimeKernel", name, None, opts)
        k = args.kernel
        self.ready = args.after
        if args.server.host.container:
            self.status = pulumi.Output.from_input(SKIPPED)
        elif not k.enabled:
            self.status = pulumi.Output.from_input("disabled in config")
        else:
            env = {"HFT_RT_PACKAGES": " ".join(k.packages), "HFT_RT_PATTERN": k.uname_pattern}
            install = Step(f"{name}-install", "realtime_kernel.sh", env).create(
                args.server.connection, self, depends_on=[args.after])
            # The install schedules a reboot 5 s after it returns; give the host time to go
            # down, then the verify step's patient dial (30 x 10 s) waits for it to come back.
            settle = local.Command(f"{name}-await-reboot", create="sleep 30", triggers=[install.id],
                                   opts=pulumi.ResourceOptions(parent=self))
            verify = Step(f"{name}-verify", "realtime_kernel_verify.sh", env).create(
                args.server.connection, self, depends_on=[settle])
            self.ready = verify
            self.status = verify.stdout.apply(lambda out: (out or "").strip().splitlines()[-1] if out else "")
        self.register_outputs({"status": self.status})
