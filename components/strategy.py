"""Strategy: one trading strategy on one app placement, through the service's own API (runbook 7.2,
and 5.3's single-strategy rollback).

One remote step per strategy and placement (``app-blue-mm_btc_usd``) runs ``strategy.sh`` on the
placement's host: it writes ``config/strategies/<id>.json`` (root-owned, readable by the service
group, never through a symlink), then over the local API loads the strategy if it is not loaded
(7.2 step 3), sets paper or live (steps 4 and 6) and starts or stops it. The API token is read
from ``.env`` on the host by the script itself: neither the command text nor stdin carries a
secret, so the step's output is shown live and kept in plain state.

- Paper to live is refused (the step fails naming the strategy and how long is left) until the
  strategy has been in paper for ``minPaperSeconds``, measured from the workload's own record
  (``paper_since``, migration 007), never from config. A standby follows the primary: it may go
  live once the primary runs the strategy live (its step passed the same gate there).
- A change of anything the API cannot set (name, symbol, exchange, maxPosition) is the runbook's
  5.3 rollback: stop, unload, load the file, start; the other strategies are other steps and stay
  untouched. Reverting the config to a previous version is exactly that change.
- Removing a strategy from config deletes this step: its ``delete`` stops and unloads it and
  removes its file, so a restart does not load it again.
- Idempotent: a run with nothing to do prints only ``ok:`` lines; the step re-runs only when its
  text (the file, the mode, the state, the placement's role) changes.

The step prints ``HFT_STRATEGY_REPORT=<json>`` (what the workload then reported: status,
paper_trading, paper_since, ...), exposed as ``report``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import pulumi

from components.reader import SKIP, MapOf, Rule, Section, choice, integer, pattern, read, setting, shown, text
from components.remote import Step
from components.reports import report_from_stdout
from components.server import Server
from components.service import ServiceSettings
from components.topology import AppPlacement, Topology

MODES = ("paper", "live")
STATES = ("running", "stopped")
# The workload's grammar of a strategy id (config.cpp): it also names the file <id>.json and a
# path segment of the API (/strategies/<id>), where nothing else may appear.
STRATEGY_ID = pattern(r"[A-Za-z0-9_.-]{1,64}", "a strategy id: 1-64 letters, digits, _ . -").where(
    lambda v: v not in (".", ".."), "a strategy id: 1-64 letters, digits, _ . - (not . or ..)")
SYMBOL = pattern(r"[A-Z0-9][A-Z0-9._/-]{0,31}", "an instrument symbol like BTC-USD")
EXCHANGE = pattern(r"[a-z0-9_-]{1,32}", "an exchange name (one of hft:service.exchanges)")


def _position(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            and 0 < v <= 1e9)


MAX_POSITION = Rule("a number greater than 0 (at most 1e9)", _position)


@dataclass(frozen=True)
class StrategySettings:
    """One strategy (runbook 7.2): what its config file says, its mode and its state."""
    id: str = setting("id", STRATEGY_ID, "the strategy's id: the key it is listed under (written here only "
                      "to repeat it)", "7.2 step 1")
    symbol: str = setting("symbol", SYMBOL, "the instrument it trades", "7.2 step 1")
    exchange: str = setting("exchange", EXCHANGE, "where it trades: one of hft:service.exchanges", "7.2 step 1")
    max_position: float = setting("maxPosition", MAX_POSITION, "its position limit, in units of the instrument",
                                  "7.2 step 1")
    mode: str = setting("mode", choice(*MODES), "paper trading or live; paper to live is refused until it has "
                        "been in paper for minPaperSeconds", "7.2 steps 4, 6")
    state: str = setting("state", choice(*STATES), "running or stopped", "7.2 step 4, 5.3")
    name: Optional[str] = setting("name", text(120), "a display name (default: the id)", "7.2 step 1",
                                  optional=True)

    @property
    def paper(self) -> bool:
        return self.mode == "paper"


class StrategyMap(MapOf):
    """``id -> StrategySettings``: each item's id is its key."""

    def __init__(self) -> None:
        super().__init__(STRATEGY_ID, Section(StrategySettings))

    def read_item(self, key: Any, value: Any, where: str, problems: list[str]) -> Any:
        if isinstance(value, dict) and value.get("id") is not None and value["id"] != key:
            problems.append(f"hft:{where}.id = {shown(value['id'])}: expected {shown(key)} (the key it is "
                            "listed under), or no id")
            return SKIP
        return read(StrategySettings, {**value, "id": key} if isinstance(value, dict) else value, where, problems)


@dataclass(frozen=True)
class StrategiesSettings:
    """The strategies every app placement runs (runbook 7.2, 5.3)."""
    min_paper_seconds: int = setting("minPaperSeconds", integer(0, 90 * 86400),
                                     "how long a strategy must have been in paper, by the workload's own "
                                     "record, before it may go live (0: no wait)", "7.2 step 5",
                                     lab="seconds in the lab; the runbook says 24 hours")
    deployed: dict = setting("deployed", StrategyMap(), "the strategies, by id: each is written to "
                             "config/strategies/<id>.json and loaded, configured and started through the API "
                             "on every app placement; removing one stops and unloads it", "7.2, 5.3")

    def problems(self, service: ServiceSettings) -> list[str]:
        """Rules across sections, for the stack's parse once both sections read cleanly.

        Each strategy's exchange must be one the service configures, and its id must not also be
        in ``hft:service.strategies`` (production.json): the workload refuses both at load and at
        the service's next --validate-config, which would stop the next release.
        """
        out = [f"hft:strategies.deployed.{sid}.exchange = {shown(s.exchange)}: expected one of "
               f"hft:service.exchanges ({', '.join(service.exchanges)})"
               for sid, s in self.deployed.items() if s is not None and s.exchange not in service.exchanges]
        inline = {x.get("id") for x in service.strategies if isinstance(x, dict)}
        out += [f"hft:strategies.deployed.{sid}: expected an id not also in hft:service.strategies (the service "
                f"would refuse its config: strategy id \"{sid}\" is defined twice); keep it in one place"
                for sid in self.deployed if sid in inline]
        return out


def render_strategy_file(s: StrategySettings) -> str:
    """config/strategies/<id>.json as the workload reads it (one per file, runbook 7.2 step 1).

    ``autostart`` is the state, so a restarted service comes back with the strategy as configured;
    ``paper_trading`` is the mode (written only once a switch to live has passed the gate).
    """
    doc = {"id": s.id, "name": s.name or s.id, "symbol": s.symbol, "exchange": s.exchange,
           "paper_trading": s.paper, "max_position": s.max_position, "autostart": s.state == "running"}
    return json.dumps(doc, indent=2) + "\n"


@dataclass
class StrategyArgs:
    server: Server
    """The placement's host."""
    placement: AppPlacement
    """Which color, its role and its API address."""
    strategy: StrategySettings
    """The strategy."""
    min_paper_seconds: int
    """The paper time a strategy needs before it may go live."""
    service: ServiceSettings
    """The application's home and user (where the file goes, who may read it)."""
    primary_api: Optional[str] = None
    """For a standby: how its host reaches the primary's API (a standby may go live once the primary
    runs the strategy live). None on the primary."""
    after: Sequence[pulumi.Resource] = field(default_factory=list)
    """The placement's service, and for a standby the primary's step of the same strategy."""


class Strategy(pulumi.ComponentResource):
    """One strategy on one app placement."""

    report: pulumi.Output[dict]
    ready: pulumi.Resource

    def __init__(self, name: str, args: StrategyArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("hft:app:Strategy", name, None, opts)
        s, app, svc = args.strategy, args.placement, args.service
        standby = app.role != "primary"
        if standby and not args.primary_api:
            raise ValueError(f"{name}: a standby placement's Strategy needs primary_api")
        env = {
            "HFT_STRATEGY_ID": s.id, "HFT_MODE": s.mode, "HFT_STATE": s.state,
            "HFT_MIN_PAPER_SECONDS": str(args.min_paper_seconds),
            "HFT_HOME": svc.home, "HFT_USER": svc.user,
            "HFT_API": app.api_url, "HFT_PLACEMENT": app.name, "HFT_ROLE": app.role,
        }
        if standby:
            env["HFT_PRIMARY_API"] = args.primary_api
        self.step = Step(f"{name}-strategy", "strategy.sh", env, {f"{s.id}.json": render_strategy_file(s)},
                         delete_script="strategy_delete.sh",
                         delete_env={k: env[k] for k in ("HFT_STRATEGY_ID", "HFT_HOME", "HFT_API", "HFT_PLACEMENT")})
        self.fingerprint = self.step.fingerprint
        self.after = list(args.after)
        # The host is a trigger: moving the placement replaces the step (unloaded on the old host).
        command = self.step.create(args.server.connection, self, depends_on=list(args.after),
                                   triggers=[app.host.name])
        self.ready = command
        self.report = report_from_stdout(command.stdout, "HFT_STRATEGY_REPORT")
        self.register_outputs({"report": self.report})


def build_strategies(topo: Topology, settings: StrategiesSettings, service: ServiceSettings,
                     servers: Mapping[str, Server], ready: Mapping[str, pulumi.Resource],
                     opts: Optional[pulumi.ResourceOptions] = None) -> dict[str, dict[str, Strategy]]:
    """Every strategy on every app placement: ``{color: {id: Strategy}}``.

    ``servers`` by host name, ``ready`` by color (each placement's release). The primary's step of
    a strategy runs first; each standby's waits for it, so a standby never goes live on a run in
    which the primary's paper-time gate refused.
    """
    primary = topo.primary
    order = [primary] + [a for a in topo.apps if a is not primary]
    out: dict[str, dict[str, Strategy]] = {a.color: {} for a in order}
    for sid, s in settings.deployed.items():
        for app in order:
            standby = app is not primary
            after = [ready[app.color]] + ([out[primary.color][sid].ready] if standby else [])
            out[app.color][sid] = Strategy(f"{app.name.replace(':', '-')}-{sid}", StrategyArgs(
                servers[app.host.name], app, s, settings.min_paper_seconds, service,
                primary_api=topo.api_url_from(app.host, primary) if standby else None, after=after), opts=opts)
    return out
