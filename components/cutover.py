"""Cutover: the blue-green switch of runbook 4.1 steps 7-8, and the immediate rollback of 5.1.

Fed by every color's release and validation: it runs after the color to be live has been
deployed and validated on the version the config names, and only when ``release.live``
changes (its command text names the live color; nothing else in it changes between runs).
On the live color's host it fences every other color, promotes the live one with a new lease
epoch, watches it for ``cutover.watchSeconds`` with gates, and rolls back by itself when a
gate fails (the update then fails saying why). At most one primary is enforced by the
database, not by this ordering: a fenced node's writes carry a stale epoch and are refused.
Setting ``live`` back is the rollback: the same switch the other way, with no build.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi

from components.database import Database
from components.reader import integer, setting
from components.remote import Step
from components.reports import report_from_stdout
from components.server import Server
from components.topology import AppPlacement, Topology


@dataclass(frozen=True)
class CutoverSettings:
    """The cutover's watch window and gates (runbook 4.1 step 8)."""
    watch_seconds: int = setting("watchSeconds", integer(0, 7200), "how long the new primary is watched after "
                                 "promotion before the cutover counts as done", "4.1 step 8",
                                 lab="seconds in the lab; the runbook watches 30 minutes")
    max_new_errors: int = setting("maxNewErrors", integer(0, 10**6), "errors the new primary may log in the "
                                  "window (hft_errors_total) before it is rolled back", "4.1 step 8")
    max_order_latency_p99_ms: int = setting("maxOrderLatencyP99Ms", integer(1, 60000), "order latency p99 in "
                                            "the window above which the new primary is rolled back", "4.1 step 8, 11.2")


@dataclass
class CutoverArgs:
    server: Server
    """The live color's host: the switch runs there."""
    topology: Topology
    """Which color is live and how its host reaches the others."""
    settings: CutoverSettings
    """Watch window and gates."""
    database: Database
    """For the trading gap, measured from the orders of the two epochs."""
    api_token: pulumi.Input[str]
    """The API token (secret)."""
    reason: Optional[str]
    """Why `live` changed (release.reason), carried into the report."""
    after: Sequence[pulumi.Resource]
    """Every color's release and validation."""


class Cutover(pulumi.ComponentResource):
    report: pulumi.Output[dict]

    def __init__(self, name: str, args: CutoverArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("hft:release:Cutover", name, None, opts)
        topo, s, db = args.topology, args.settings, args.database.config
        live: AppPlacement = topo.primary
        others = [a for a in topo.apps if a is not live]
        self.step = Step(f"{name}-switch", "cutover.sh", {
            "HFT_TO_COLOR": live.color, "HFT_TO_API": live.api_url,
            "HFT_TO_VERSION": live.version.lstrip("v").split("-")[0],
            "HFT_OTHERS": " ".join(f"{a.color}={topo.api_url_from(live.host, a)}" for a in others),
            "HFT_WATCH_SECONDS": str(s.watch_seconds), "HFT_GATE_MAX_ERRORS": str(s.max_new_errors),
            "HFT_GATE_MAX_P99_MS": str(s.max_order_latency_p99_ms),
            "HFT_DB_HOST": topo.address(live.host, topo.db), "HFT_DB_PORT": "5432",
            "HFT_DB_NAME": db.name, "HFT_DB_USER": db.user, "HFT_REASON": args.reason or "",
        }, stdin=pulumi.Output.all(args.api_token, args.database.password).apply(lambda t: f"{t[0]}\n{t[1]}\n"),
            # Never "already applied": blue -> green -> blue brings back an earlier text on an
            # earlier host, where what is live was changed by the switch on the other host.
            mode="always")
        command = self.step.create(args.server.connection, self, depends_on=list(args.after), secret=True)
        self.report = pulumi.Output.unsecret(report_from_stdout(command.stdout, "HFT_CUTOVER_REPORT"))
        self.register_outputs({"report": self.report})
