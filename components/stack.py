"""The component tree of one stack, from its parsed config (DESIGN.md section 3).

Kept apart from ``__main__.py`` so unit tests can build the same tree under Pulumi mocks.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

import pulumi

from components.baseline import HostBaseline, HostBaselineArgs
from components.config import ConfigError, Host, StackConfig
from components.database import Database, DatabaseArgs
from components.migrations import Migrations, MigrationsArgs
from components.monitoring import Monitoring, MonitoringArgs
from components.postgres import PostgresServer, PostgresServerArgs
from components.realtime_kernel import RealtimeKernel, RealtimeKernelArgs
from components.server import Server, ServerArgs
from components.service import HftService, HftServiceArgs
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


def build(cfg: StackConfig, exchange_keys: pulumi.Input[Mapping[str, str]],
          shared_key: Optional[pulumi.Output[str]] = None) -> dict[str, Any]:
    """Create every component of the stack; returns the stack outputs."""
    servers: dict[str, Server] = {}
    baselines: dict[str, HostBaseline] = {}
    kernels: dict[str, RealtimeKernel] = {}
    for host in cfg.hosts:
        server = Server(host.name, ServerArgs(host, cfg.hosts, cfg.preflight, private_key_for(host, shared_key)))
        baseline = HostBaseline(f"{host.name}-baseline", HostBaselineArgs(server, cfg.baseline),
                                opts=pulumi.ResourceOptions(parent=server))
        kernel = RealtimeKernel(f"{host.name}-rt-kernel", RealtimeKernelArgs(server, cfg.realtime_kernel,
                                                                            baseline.command),
                                opts=pulumi.ResourceOptions(parent=server))
        servers[host.name], baselines[host.name], kernels[host.name] = server, baseline, kernel

    db_host = cfg.host_with_role("db")
    app_host = cfg.host_with_role("app")
    mon_host = cfg.host_with_role("monitoring")
    db_address = "127.0.0.1" if db_host.name == app_host.name else db_host.address

    pg = PostgresServer("postgres", PostgresServerArgs(servers[db_host.name], cfg.postgres,
                                                      kernels[db_host.name].ready))
    database = Database("hft-db", DatabaseArgs(servers[db_host.name], pg, cfg.database))
    migrations = Migrations("hft-migrations", MigrationsArgs(servers[db_host.name], database))
    service = HftService("hft-service", HftServiceArgs(
        servers[app_host.name], cfg.service, database, db_address, exchange_keys,
        after=migrations.ready), opts=pulumi.ResourceOptions(depends_on=[kernels[app_host.name].ready]))
    app_target = (f"localhost:{cfg.service.api_port}" if mon_host.name == app_host.name
                  else f"{app_host.address}:{cfg.service.api_port}")
    # After the service: Prometheus scrapes it, and steps on one host never run apt at once.
    monitoring = Monitoring("monitoring", MonitoringArgs(servers[mon_host.name], cfg.monitoring, app_target,
                                                         after=service.ready))
    prometheus = ("http://127.0.0.1:9090" if mon_host.name == app_host.name else f"http://{mon_host.address}:9090")
    validation = Validation("validation", ValidationArgs(
        servers[app_host.name], cfg.service, database, db_address, migrations.expected_version, prometheus,
        after=[service.ready, monitoring.ready, migrations.ready],
        fingerprint_of=[service.fingerprint, migrations.fingerprint, monitoring.fingerprint]
        + [b.fingerprint for b in baselines.values()]))

    return {
        "environment": cfg.environment,
        "hosts": {h.name: {"address": h.address, "roles": list(h.roles)} for h in cfg.hosts},
        "version": service.version,
        "db_endpoint": f"{db_host.address}:5432/{cfg.database.name}",
        "kernel_steps": {name: pulumi.Output.all(baselines[name].kernel_steps, kernels[name].status).apply(
            lambda parts: {**parts[0], "realtime_kernel": parts[1]}) for name in servers},
        "preflight": {name: s.preflight_report for name, s in servers.items()},
        "migrations": migrations.report,
        "validation": validation.report,
    }
