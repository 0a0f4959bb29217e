"""The component tree of one stack: config -> topology -> fleet / data / release -> outputs
(DESIGN.md section 3).

Fleet layer, once per host whatever runs on it: Server, HostBaseline, RealtimeKernel,
NodeExporter. Data layer on the db placement's host: PostgresServer, Database, Migrations.
Release layer, once per app placement: HftService and its Validation. Monitoring on the
monitoring placement's host scrapes every app placement and every host. Kept apart from
``__main__.py`` so unit tests build the same tree under Pulumi mocks.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import pulumi
import pulumi_random as random

from components.baseline import HostBaseline, HostBaselineArgs
from components.config import ConfigError, Host, StackConfig
from components.cutover import Cutover, CutoverArgs
from components.database import Database, DatabaseArgs
from components.migrations import Migrations, MigrationsArgs
from components.monitoring import Monitoring, MonitoringArgs
from components.node_exporter import NodeExporter, NodeExporterArgs
from components.postgres import HbaEntry, PostgresServer, PostgresServerArgs
from components.preflight import Preflight, build_preflights
from components.realtime_kernel import RealtimeKernel, RealtimeKernelArgs
from components.server import Server, ServerArgs
from components.service import HftService, HftServiceArgs
from components.strategy import Strategy, build_strategies
from components.validation import Validation, ValidationArgs


def private_key_for(host: Host, shared_key: Optional[pulumi.Output[str]]) -> Optional[pulumi.Output[str]]:
    """The SSH private key: the host's key file when configured, else the stack's secret key."""
    if host.private_key_file:
        path = Path(host.private_key_file).expanduser()
        if not path.is_file():
            raise ConfigError([f"hft:hosts.{host.name}.privateKeyFile = {host.private_key_file!r}: "
                               "expected a readable private key file"])
        return pulumi.Output.secret(path.read_text())
    if shared_key is None:
        raise ConfigError([f"hft:hosts.{host.name}: no SSH key: set privateKeyFile or the secret hft:sshPrivateKey"])
    return shared_key


class Fleet:
    """The per-host layer: every host gets these once, whatever placements it carries.

    Every host's preflight runs first; each host's first changing step (its Server's identity)
    waits for all of them, and every other step of a host waits for that one (directly or
    through the steps it follows), so a failed preflight anywhere stops every change everywhere.
    """

    def __init__(self, cfg: StackConfig, shared_key: Optional[pulumi.Output[str]]):
        keys = {h.name: private_key_for(h, shared_key) for h in cfg.hosts}
        self.preflights: dict[str, Preflight] = build_preflights(cfg, keys)
        gate = list(self.preflights.values())
        self.servers: dict[str, Server] = {}
        self.baselines: dict[str, HostBaseline] = {}
        self.kernels: dict[str, RealtimeKernel] = {}
        self.exporters: dict[str, NodeExporter] = {}
        for host in cfg.hosts:
            n = host.name
            server = Server(n, ServerArgs(host, cfg.hosts, gate, keys[n]))
            child = pulumi.ResourceOptions(parent=server)
            baseline = HostBaseline(n, HostBaselineArgs(server, cfg.baseline), opts=child)
            # A reboot would stop trading on the primary's host: refused there while it runs.
            guard = "hft_system" if (n == cfg.topology.primary.host.name
                                     and not cfg.service.allow_primary_restart) else ""
            kernel = RealtimeKernel(n, RealtimeKernelArgs(server, cfg.realtime_kernel, baseline.ready,
                                                            quiesce=baseline.after_all, guard_unit=guard),
                                    opts=child)
            exporter = NodeExporter(n, NodeExporterArgs(server, cfg.monitoring.node_exporter_package,
                                                        cfg.monitoring.node_exporter_port, kernel.ready), opts=child)
            self.servers[n], self.baselines[n], self.kernels[n], self.exporters[n] = server, baseline, kernel, exporter

    def ready(self, host: str) -> list[pulumi.Resource]:
        """Everything the host's own layer does, for steps placed on it to wait for."""
        return [self.kernels[host].ready, self.exporters[host].ready, *self.baselines[host].after_all]

    def fingerprints(self, host: str) -> list[str]:
        return [*self.baselines[host].fingerprints.values(), self.exporters[host].fingerprint]


@dataclass
class Deployment:
    """The components of one stack, and its outputs."""
    fleet: Fleet
    cutover: Cutover
    postgres: PostgresServer
    database: Database
    migrations: Migrations
    services: dict[str, HftService]
    monitoring: Monitoring
    validations: dict[str, Validation]
    outputs: dict[str, Any]
    strategies: dict[str, dict[str, Strategy]]


def build(cfg: StackConfig, exchange_keys: pulumi.Input[Mapping[str, str]],
          shared_key: Optional[pulumi.Output[str]] = None,
          db_password: Optional[pulumi.Output[str]] = None) -> Deployment:
    """Create every component of the stack."""
    topo = cfg.topology
    fleet = Fleet(cfg, shared_key)
    db_server = fleet.servers[topo.db.name]

    hba = [HbaEntry("host", cfg.database.name, cfg.database.user, cidr, "scram-sha-256")
           for cidr in topo.db_clients()] + list(cfg.postgres.hba)
    pg = PostgresServer(topo.db.name, PostgresServerArgs(db_server, cfg.postgres, topo.db_listen(), hba,
                                                         fleet.kernels[topo.db.name].ready))
    database = Database(cfg.database.name, DatabaseArgs(db_server, pg, cfg.database, db_password))
    migrations = Migrations(cfg.database.name, MigrationsArgs(
        db_server, database, [(a, fleet.servers[a.host.name]) for a in topo.apps],
        cfg.service.allow_primary_restart, cfg.service.health_timeout_seconds))
    api_token = random.RandomPassword("api-token", length=40, special=False).result

    services: dict[str, HftService] = {}
    for app in topo.apps:
        name = app.name.replace(":", "-")
        services[app.color] = HftService(name, HftServiceArgs(
            fleet.servers[app.host.name], app, cfg.service, database, topo.address(app.host, topo.db),
            exchange_keys, api_token, after=[migrations.ready, *fleet.ready(app.host.name)]))

    # After every service: Prometheus scrapes them, and apt runs one step at a time per host.
    monitoring = Monitoring(topo.monitoring.name, MonitoringArgs(
        fleet.servers[topo.monitoring.name], cfg.monitoring,
        [(a.color, topo.scrape_target(a)) for a in topo.apps],
        topo.node_targets(cfg.monitoring.node_exporter_port),
        after=[s.ready for s in services.values()] + fleet.ready(topo.monitoring.name)))

    validations = {}
    for app in topo.apps:
        name = app.name.replace(":", "-")
        service = services[app.color]
        validations[app.color] = Validation(name, ValidationArgs(
            fleet.servers[app.host.name], app, cfg.service, database, topo.address(app.host, topo.db),
            migrations.expected_version, topo.prometheus_url(app.host, cfg.monitoring.prometheus_port),
            topo.scrape_target(app), cfg.validation.strict,
            after=[service.ready, monitoring.ready, migrations.ready],
            fingerprint_of=[service.fingerprint, migrations.fingerprint, monitoring.fingerprint, pg.fingerprint,
                            *fleet.fingerprints(app.host.name)]))

    strategies = build_strategies(topo, cfg.strategies, cfg.service, fleet.servers,
                                  {c: s.ready for c, s in services.items()})

    live = topo.primary
    cutover = Cutover("live", CutoverArgs(
        fleet.servers[live.host.name], topo, cfg.cutover, database, api_token, cfg.release.reason,
        after=[*(s.ready for s in services.values()), *(v.ready for v in validations.values())]))

    outputs = {
        "environment": cfg.environment,
        "hosts": {h.name: {"address": h.address,
                           "placements": [p for p, n in placements_of(cfg).items() if n == h.name]}
                  for h in cfg.hosts},
        "live": cfg.release.live,
        "colors": {a.color: {"host": a.host.name, "version": services[a.color].version, "role": a.role,
                             "trading_enabled": a.trading_enabled} for a in topo.apps},
        "db_endpoint": f"{topo.db.address}:5432/{cfg.database.name}",
        "kernel_steps": {n: pulumi.Output.all(fleet.baselines[n].kernel_steps, fleet.kernels[n].status).apply(
            lambda parts: {**parts[0], "realtime_kernel": parts[1]}) for n in fleet.servers},
        "preflight": {n: s.preflight_report for n, s in fleet.servers.items()},
        "migrations": migrations.report,
        "validation": {c: v.report for c, v in validations.items()},
        "cutover": cutover.report,
        "strategies": {c: {sid: s.report for sid, s in per.items()} for c, per in strategies.items()},
    }
    return Deployment(fleet, cutover, pg, database, migrations, services, monitoring, validations, outputs,
                      strategies)


def placements_of(cfg: StackConfig) -> dict[str, str]:
    topo = cfg.topology
    out = {a.name: a.host.name for a in topo.apps}
    out["db"], out["monitoring"] = topo.db.name, topo.monitoring.name
    return out
