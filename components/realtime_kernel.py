"""RealtimeKernel: the RT kernel package, a reboot into it, and a `uname -r` check (runbook 3.2 step 2).

A container host shares this machine's kernel, so there the component creates no remote
command at all and its ``status`` output says "skipped: container host".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
from pulumi_command import local

from components.reader import BOOL, PACKAGE, ListOf, pattern, per_family, setting
from components.remote import Step
from components.server import Server

SKIPPED = "skipped: container host"


@dataclass(frozen=True)
class RealtimeKernelSettings:
    """Runbook 3.2 step 2."""
    enabled: bool = setting("enabled", BOOL, "install the RT kernel and reboot into it", "3.2 step 2",
                            lab="skipped on container hosts")
    packages: dict = setting("packages", per_family(ListOf(PACKAGE, min_items=1)),
                             "RT kernel packages per OS family (chosen on the host)", "3.2 step 2")
    uname_pattern: dict = setting("unamePattern", per_family(pattern(r"-[a-z0-9-]{1,30}",
                                                                     "a uname -r fragment like -rt")),
                                  "what `uname -r` shows once the RT kernel runs, per OS family", "3.2 step 2")

    def env(self) -> dict[str, str]:
        """The per-family values as the scripts read them (HFT_RT_PACKAGES_DEBIAN, ...)."""
        out = {f"HFT_RT_PACKAGES_{f.upper()}": " ".join(p) for f, p in sorted(self.packages.items())}
        out.update({f"HFT_RT_PATTERN_{f.upper()}": p for f, p in sorted(self.uname_pattern.items())})
        return out


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
            env = k.env()
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
