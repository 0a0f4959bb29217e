"""Preflight: one read-only check per host, run on every host before any host is changed
(runbook 2.2, 3.1, 3.3).

It lists at once everything it can see there that a later step needs: the OS (its family picks
the per-family config values), runbook 2.2's hardware and 3.1's disks (``/`` and the data mount,
each against its own minimum), every package a step of this host will install (baseline, the RT
kernel of this OS family, node_exporter, and, where placed there, the release build, PostgreSQL
with TimescaleDB, monitoring with Grafana) against the host's own apt sources, library versions
at what the baseline will install, and the release repository with the tags placed on the host.
Each finding names the config key that changes it. Requirements (hardware, disks, versions) stop
the update only with ``preflight.enforce`` (prod); what would make a later step fail for certain
(an unsupported OS, an uninstallable package, an unreachable repository, a missing tag) always
does. Every host's first changing step waits for every host's preflight (``stack.py``), so one
failure reports every host's problems and nothing has changed anywhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence

import pulumi

from components.reader import BOOL, ListOf, abs_path, integer, pattern, per_family, setting, text
from components.remote import Step, connection
from components.reports import report_from_stdout

if TYPE_CHECKING:
    from components.config import StackConfig
    from components.server import Host

VERSION = pattern(r"\d+(\.\d+){0,3}", "a version like 1.74 or 3.0")


@dataclass(frozen=True)
class PreflightSettings:
    """Runbook 2.2's system requirements and 3.1's disks, checked read-only on each host first."""
    min_cores: int = setting("minCores", integer(1, 4096), "CPU cores", "2.2")
    min_ram_gb: int = setting("minRamGb", integer(1, 65536), "RAM in GB", "2.2")
    min_root_gb: int = setting("minRootGb", integer(1, 10**6), "size of the filesystem holding / in GB",
                               "3.1 step 2")
    min_data_gb: int = setting("minDataGb", integer(1, 10**6), "size of the data filesystem in GB (the rest of "
                               "the 2 TB NVMe)", "2.2, 3.1 step 2")
    data_mount: str = setting("dataMount", abs_path("/data", "/srv", "/var/lib"),
                              "mount point of the data filesystem (missing: a finding)", "3.1 step 2",
                              lab="missing on lab hosts: reported, not enforced")
    supported_os: dict = setting("supportedOs", per_family(ListOf(pattern(r"\d+(\.\d+)?", "a VERSION_ID like "
                                                                                          "12 or 22.04"),
                                                                  min_items=1)),
                                 "OS releases per family (ID and VERSION_ID of /etc/os-release); any other OS "
                                 "fails the preflight", "2.2")
    required_os: str = setting("requiredOs", text(60), "OS the runbook names (a mismatch is reported, "
                               "never fatal)", "2.2")
    min_boost: str = setting("minBoost", VERSION, "Boost version, checked against what the baseline installs",
                             "2.2")
    min_openssl: str = setting("minOpenssl", VERSION, "OpenSSL version, checked against what the baseline "
                               "installs", "2.2")
    enforce: bool = setting("enforce", BOOL, "stop the update when a requirement (cores, RAM, disks, "
                            "versions) is not met; what would make a later step fail always stops it", "2.2",
                            lab="false: the lab only reports")


# Packages a step installs besides its configured list, attributed to that list's key.
IMPLICIT = {"service.buildPackages": ("git", "curl", "jq"), "monitoring.packages": ("curl",),
            "monitoring.nodeExporterPackage": ("curl",)}


def package_lines(cfg: "StackConfig", host: "Host") -> list[str]:
    """``FAMILY KEY PACKAGE`` for every package a step of ``host`` will install."""
    topo, out = cfg.topology, []

    def add(key: str, packages: Sequence[str], family: str = "any") -> None:
        out.extend(f"{family} {key} {p}" for p in (*packages, *IMPLICIT.get(key, ())))

    add("baseline.packages", cfg.baseline.packages)
    if cfg.baseline.cpu_governor and not host.container:
        add("baseline.cpuGovernor", ["cpufrequtils"])
    rt = cfg.realtime_kernel
    if rt.enabled and not host.container:
        for family, packages in sorted(rt.packages.items()):
            add(f"realtimeKernel.packages.{family}", packages, family)
    add("monitoring.nodeExporterPackage", [cfg.monitoring.node_exporter_package])
    if any(a.host.name == host.name for a in topo.apps):
        add("service.buildPackages", cfg.service.build_packages)
    if topo.db.name == host.name:
        add("postgres.packages", cfg.postgres.packages)
        if cfg.postgres.timescaledb:
            add("postgres.timescaledb", ["timescaledb-2-postgresql-%PG%"])
    if topo.monitoring.name == host.name:
        add("monitoring.packages", cfg.monitoring.packages)
        if cfg.monitoring.grafana:
            add("monitoring.grafana", ["grafana"])
    return out


def repository_lines(cfg: "StackConfig", host: "Host") -> list[str]:
    """``FAMILY KEY URL``: apt repositories a step of ``host`` will add (checked with the packages)."""
    if cfg.topology.db.name != host.name or not cfg.postgres.timescaledb:
        return []
    return [f"{f} postgres.timescaledbRepository.{f} {url}"
            for f, url in sorted(cfg.postgres.timescaledb_repository.items())]


def library_env(packages: Sequence[str]) -> dict[str, str]:
    """Which package of baseline.packages brings each library runbook 2.2 names a version of."""
    def first(prefix: str) -> str:
        return next((p for p in packages if p.startswith(prefix)), "")
    return {"HFT_LIB_BOOST": first("libboost"), "HFT_LIB_OPENSSL": first("libssl"), "HFT_LIB_PQ": first("libpq")}


@dataclass
class PreflightArgs:
    host: "Host"
    """The machine to look at."""
    settings: PreflightSettings
    """Runbook 2.2's requirements."""
    packages: Sequence[str]
    """``FAMILY KEY PACKAGE`` lines (``package_lines``)."""
    repositories: Sequence[str]
    """``FAMILY KEY URL`` lines (``repository_lines``)."""
    library_packages: dict
    """HFT_LIB_* (``library_env``)."""
    repository: Optional[str]
    """The release repository, where a release is placed on this host."""
    tags: Sequence[tuple[str, str]]
    """(config key, tag) of every release placed on this host."""
    private_key: Optional[pulumi.Input[str]]
    """The deploy key (secret)."""


class Preflight(pulumi.ComponentResource):
    """The read-only check of one host; ``report`` is what it found (the ``preflight`` output)."""

    report: pulumi.Output[dict]
    step: pulumi.Resource

    def __init__(self, name: str, args: PreflightArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("hft:host:Preflight", name, None, opts)
        pre, host = args.settings, args.host
        self.host = host
        env = {
            "HFT_MIN_CORES": str(pre.min_cores), "HFT_MIN_RAM_GB": str(pre.min_ram_gb),
            "HFT_MIN_ROOT_GB": str(pre.min_root_gb), "HFT_MIN_DATA_GB": str(pre.min_data_gb),
            "HFT_DATA_MOUNT": pre.data_mount, "HFT_REQUIRED_OS": pre.required_os,
            "HFT_SUPPORTED_OS": " ".join(f"{f}:{v}" for f, vs in sorted(pre.supported_os.items()) for v in vs),
            "HFT_MIN_BOOST": pre.min_boost, "HFT_MIN_OPENSSL": pre.min_openssl,
            "HFT_ENFORCE": "1" if pre.enforce else "0",
            **args.library_packages,
            "HFT_REPOSITORY": args.repository or "",
            "HFT_RELEASE_TAGS": " ".join(f"{k}={t}" for k, t in args.tags),
        }
        files = {"packages.list": "".join(line + "\n" for line in args.packages)}
        if args.repositories:
            files["repositories.list"] = "".join(line + "\n" for line in args.repositories)
        self.preflight_step = Step(f"{name}-preflight", "preflight.sh", env, files)
        self.step = self.preflight_step.create(connection(host, args.private_key), self)
        self.report = report_from_stdout(self.step.stdout, "HFT_PREFLIGHT_REPORT")
        self.register_outputs({"report": self.report})


def build_preflights(cfg: "StackConfig", keys: dict) -> dict[str, Preflight]:
    """One preflight per host, with what each host's steps will need."""
    topo, out = cfg.topology, {}
    for host in cfg.hosts:
        apps = [a for a in topo.apps if a.host.name == host.name]
        out[host.name] = Preflight(host.name, PreflightArgs(
            host, cfg.preflight, package_lines(cfg, host), repository_lines(cfg, host),
            library_env(cfg.baseline.packages),
            cfg.service.repository if apps else None,
            [(f"release.{a.color}.version", a.version) for a in apps], keys[host.name]))
    return out
