"""Topology: which part of the system runs on which host, and how they reach each other.

A pure layer between parsed config and components (no Pulumi resources). A *placement*
names the host a part runs on: ``app:blue``, ``app:green`` (later ``app:canary``), ``db``,
``monitoring`` (later ``db-replica``). One host may carry several placements; one host per
role is assumed nowhere. Every "how does X on host A reach Y on host B" question is answered
here, in :meth:`Topology.address`: loopback when co-located, the host's address otherwise.

The release section says which version each color runs and which color is live; the live
color's placement is the primary, every other app placement a standby that never trades.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from components.reader import TAG, ConfigError, Section, choice, setting, text

COLORS = ("blue", "green")
PLACEMENTS = tuple(f"app:{c}" for c in COLORS) + ("db", "monitoring")
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class ColorRelease:
    """What one color runs."""
    version: str = setting("version", TAG, "the git tag this color builds and runs", "4.1 step 1")


@dataclass(frozen=True)
class ReleaseSettings:
    """Versions per color and the live color (runbook 4, DESIGN section 5)."""
    live: str = setting("live", choice(*COLORS), "the color that is primary and may trade", "4.1 step 7")
    blue: Optional[ColorRelease] = setting("blue", Section(ColorRelease), "blue's release", "4.1",
                                           optional=True)
    green: Optional[ColorRelease] = setting("green", Section(ColorRelease), "green's release", "4.1",
                                            optional=True)
    reason: Optional[str] = setting("reason", text(200), "why `live` last changed (the cutover report and the "
                                    "rollback notice carry it)", "5.1 step 6", optional=True)

    def of(self, color: str) -> Optional[ColorRelease]:
        return getattr(self, color)


class TopologyError(ConfigError):
    """A placement problem: the same key/value/allowed form as every config error."""


@dataclass(frozen=True)
class HostRef:
    """What the topology needs of a host: its name and address."""
    name: str
    address: str


@dataclass(frozen=True)
class AppPlacement:
    """One color of the application on one host."""
    name: str               # "app:blue"
    color: str
    host: "HostRef"
    version: str
    role: str               # "primary" or "standby"
    trading_enabled: bool   # only ever true on the primary
    api_bind: str           # the address the control API listens on
    api_url: str            # how scripts on the same host reach it


@dataclass(frozen=True)
class Topology:
    hosts: tuple
    apps: tuple[AppPlacement, ...]
    db: "HostRef"
    monitoring: "HostRef"
    api_port: int

    @staticmethod
    def address(src: "HostRef", dst: "HostRef") -> str:
        """How a process on ``src`` reaches a service on ``dst``."""
        return LOOPBACK if src.name == dst.name else dst.address

    @property
    def primary(self) -> AppPlacement:
        return next(a for a in self.apps if a.role == "primary")

    def app_hosts(self) -> list:
        seen: dict[str, object] = {}
        for a in self.apps:
            seen.setdefault(a.host.name, a.host)
        return list(seen.values())

    def db_listen(self) -> list[str]:
        """Where PostgreSQL listens: loopback, plus its own address when an app host is elsewhere."""
        remote = any(h.name != self.db.name for h in self.app_hosts())
        return ["localhost"] + ([self.db.address] if remote else [])

    def db_clients(self) -> list[str]:
        """Address ranges the app hosts connect to PostgreSQL from (one /32 or /128 each)."""
        out = []
        for h in self.app_hosts():
            addr = self.address(h, self.db)
            src = LOOPBACK if addr == LOOPBACK else h.address
            cidr = f"{src}/128" if ":" in src else f"{src}/32"
            if cidr not in out:
                out.append(cidr)
        return out

    def api_url_from(self, src: "HostRef", app: AppPlacement) -> str:
        """How a process on ``src`` reaches one app placement's control API."""
        return app.api_url if src.name == app.host.name else f"http://{app.host.address}:{self.api_port}"

    def scrape_target(self, app: AppPlacement) -> str:
        """How Prometheus (on the monitoring host) reaches one app placement's metrics."""
        return self.api_url_from(self.monitoring, app).removeprefix("http://")

    def node_targets(self, port: int) -> list[str]:
        return [f"{self.address(self.monitoring, h)}:{port}" for h in self.hosts]

    def prometheus_url(self, src: "HostRef", port: int = 9090) -> str:
        return f"http://{self.address(src, self.monitoring)}:{port}"


def build(hosts: Sequence["HostRef"], placements: Mapping[str, str], release: ReleaseSettings,
          trading_enabled: bool, api_port: int) -> Topology:
    """The topology of a stack, or a :class:`TopologyError` listing every problem."""
    problems: list[str] = []
    by_name = {h.name: h for h in hosts}
    for placement, host in placements.items():
        if host not in by_name:
            problems.append(f"hft:placements.{placement} = \"{host}\": expected a host declared in hft:hosts "
                            f"({', '.join(by_name) or 'none declared'})")
    for required in ("db", "monitoring"):
        if required not in placements:
            problems.append(f"hft:placements.{required} is missing: expected the name of the host it runs on")
    colors = [c for c in COLORS if f"app:{c}" in placements]
    if release.live not in colors:
        problems.append(f"hft:release.live = \"{release.live}\": expected a color with an app placement "
                        f"({', '.join('app:' + c for c in colors) or 'none placed'})")
    for c in colors:
        if release.of(c) is None:
            problems.append(f"hft:release.{c} is missing: expected {{version: vX.Y.Z}} for placement app:{c}")
    for c in COLORS:
        if release.of(c) is not None and c not in colors:
            problems.append(f"hft:release.{c} = (set): expected a placement app:{c} in hft:placements "
                            "(a release for a color that runs nowhere)")
    if problems:
        raise TopologyError(problems)
    monitoring = by_name[placements["monitoring"]]
    app_hosts = {placements[f"app:{c}"] for c in colors}
    apps = []
    for c in colors:
        host = by_name[placements[f"app:{c}"]]
        primary = c == release.live
        # Loopback unless something on another host needs it: Prometheus scraping it, or the
        # cutover (run on the color to be live) fencing it. Writes need the API token anyway.
        alone = host.name == monitoring.name and app_hosts == {host.name}
        bind = LOOPBACK if alone else host.address
        apps.append(AppPlacement(f"app:{c}", c, host, release.of(c).version,  # type: ignore[union-attr]
                                 "primary" if primary else "standby", primary and trading_enabled,
                                 bind, f"http://{bind}:{api_port}"))
    topo = Topology(tuple(hosts), tuple(apps), by_name[placements["db"]], monitoring, api_port)
    check_one_primary(topo.apps)
    return topo


def check_one_primary(apps: Sequence[AppPlacement]) -> None:
    """Never two primaries (the database enforces it at run time; this refuses it at preview)."""
    primaries = [a.name for a in apps if a.role == "primary"]
    if len(primaries) != 1:
        raise TopologyError([f"hft:release.live: expected exactly one primary placement, found "
                             f"{', '.join(primaries) or 'none'}"])
