"""RealtimeKernel: the RT kernel package, a reboot into it, and a `uname -r` check (runbook 3.2 step 2).

Four children, each named so that `pulumi preview` says what will happen to which host:

- ``<host>-rt-kernel-install`` installs the packages (nothing when the RT kernel runs already);
- ``<host>-rt-kernel-reboot`` reboots the host when the newest installed kernel matching
  ``unamePattern`` is not the running one. It runs only when Pulumi runs it: at first
  provisioning and when the install step's text changes (new packages or pattern). A preview
  that lists no ``*-rt-kernel-reboot`` resource reboots nothing; one that lists it
  (``+`` or ``~``) may reboot that host;
- ``<host>-rt-kernel-reboot-wait``, on the deployer's machine, waits up to
  ``rebootWaitSeconds`` for the host's SSH port to go down and answer again, and fails with
  "<host> did not come back from the RT-kernel reboot after N s" and what to check;
- ``<host>-rt-kernel-verify`` checks `uname -r` and /sys/kernel/realtime after the reboot.

The reboot waits for every other step of the host's own layer (``quiesce``): nothing of
this ``up`` is running there when it goes down, and everything placed on the host waits
for the verify step. On the host of the trading primary (``guard_unit``) a reboot is
refused while the service runs: cut over first.

A container host shares this machine's kernel, so there the component creates no command
at all and its ``status`` output says "skipped: container host".
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Optional, Sequence

import pulumi
from pulumi_command import local

from components.reader import BOOL, PACKAGE, ListOf, integer, pattern, per_family, setting
from components.remote import Step, read_script
from components.reports import report_from_stdout
from components.server import Server

SKIPPED = "skipped: container host"
REBOOT_REPORT = "HFT_RT_REBOOT_REPORT"


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
    reboot_wait_seconds: int = setting("rebootWaitSeconds", integer(30, 7200),
                                       "how long `up` waits for a host to come back from the RT-kernel reboot "
                                       "(SSH answering again) before it fails naming the host", "3.2 step 2",
                                       lab="the lab VM under TCG comes back in 1-2 minutes")

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
    quiesce: Sequence[pulumi.Resource] = field(default_factory=list)
    """The host's other steps: the reboot waits until they are done."""
    guard_unit: str = ""
    """A unit that must not be running when the host reboots (the trading primary's service):
    while it is active a needed reboot fails the step instead."""


def await_reboot_command(name: str, server: Server, wait_seconds: int, report: pulumi.Output[dict],
                         parent: pulumi.Resource, depends_on: Sequence[pulumi.Resource] = ()) -> local.Command:
    """The local command that waits for ``server`` to come back from the reboot ``report`` describes.

    It is replaced (so it runs) exactly when the reboot step printed a new report; a changed
    wait or script alone runs its no-op ``update``. Its command text is short (`bash -s`, the
    script on stdin), so a failure shows the script's message, not the script.
    """
    token = report.apply(lambda r: json.dumps(r, sort_keys=True))
    host = server.host
    return local.Command(
        f"{name}-rt-kernel-reboot-wait",
        create="bash -s",
        update="echo 'ok: reboot wait settings changed; no reboot pending'",
        stdin=read_script("realtime_kernel_await.sh"),
        environment={
            "HFT_HOST_NAME": host.name, "HFT_ADDRESS": host.address, "HFT_PORT": str(host.port),
            "HFT_WAIT_SECONDS": str(wait_seconds),
            "HFT_REBOOT": report.apply(lambda r: "1" if r.get("reboot") is True else "0"),
            "HFT_RT_KERNEL": report.apply(lambda r: str(r.get("to") or "")),
        },
        triggers=[token],
        logging=local.Logging.STDOUT_AND_STDERR,
        opts=pulumi.ResourceOptions(
            parent=parent, depends_on=list(depends_on),
            custom_timeouts=pulumi.CustomTimeouts(create=f"{wait_seconds + 60}s", update="60s")),
    )


class RealtimeKernel(pulumi.ComponentResource):
    status: pulumi.Output[str]
    ready: pulumi.Resource

    def __init__(self, name: str, args: RealtimeKernelArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("hft:host:RealtimeKernel", name, None, opts)
        k = args.kernel
        self.ready = args.after
        self.steps: dict[str, Step] = {}
        if args.server.host.container:
            self.status = pulumi.Output.from_input(SKIPPED)
        elif not k.enabled:
            self.status = pulumi.Output.from_input("disabled in config")
        else:
            conn = args.server.connection
            env = k.env()
            patterns = {n: v for n, v in env.items() if n.startswith("HFT_RT_PATTERN")}
            install_step = Step(f"{name}-rt-kernel-install", "realtime_kernel.sh", env)
            install = install_step.create(conn, self, depends_on=[args.after])
            # Runs again exactly when the install's text does (new packages or pattern).
            reboot_env = dict(patterns)
            if args.guard_unit:
                reboot_env["HFT_RT_REBOOT_GUARD"] = args.guard_unit
            reboot_step = Step(f"{name}-rt-kernel-reboot", "realtime_kernel_reboot.sh", reboot_env,
                               rerun=f"after {install_step.name} {install_step.fingerprint[:16]}")
            self.reboot_after = [install, *args.quiesce]
            reboot = reboot_step.create(conn, self, depends_on=self.reboot_after)
            report = report_from_stdout(reboot.stdout, REBOOT_REPORT)
            wait = await_reboot_command(name, args.server, k.reboot_wait_seconds, report, self, [reboot])
            verify_step = Step(f"{name}-rt-kernel-verify", "realtime_kernel_verify.sh", patterns)
            # Verified again after every reboot (a new report), and when the pattern changes.
            verify = verify_step.create(conn, self, depends_on=[wait],
                                        triggers=[report.apply(lambda r: json.dumps(r, sort_keys=True))])
            self.steps = {s.name: s for s in (install_step, reboot_step, verify_step)}
            self.reboot, self.wait = reboot, wait
            self.ready = verify
            self.status = verify.stdout.apply(lambda out: (out or "").strip().splitlines()[-1] if out else "")
        self.register_outputs({"status": self.status})
