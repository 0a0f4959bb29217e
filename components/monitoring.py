"""Monitoring: Prometheus on the monitoring host, scraping every app placement and the
node_exporter of every host, with Grafana dashboards (runbook 3.7).

Dashboards are JSON files in ``monitoring/dashboards/``; where Grafana is not configured (the
lab) they are provisioned as files on the host and the script says Grafana was skipped.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi
import yaml

from components.reader import REPO, BOOL, DURATION, PACKAGE, ListOf, integer, pattern, setting
from components.remote import Step, payload_dir
from components.server import Server

DASHBOARDS = REPO / "monitoring" / "dashboards"


@dataclass(frozen=True)
class MonitoringSettings:
    """Prometheus, node_exporter and Grafana (runbook 3.7)."""
    packages: tuple[str, ...] = setting("packages", ListOf(PACKAGE, min_items=1), "monitoring host packages",
                                        "3.3 step 4")
    grafana: bool = setting("grafana", BOOL, "install Grafana from its repository", "3.7 step 2",
                            lab="false: dashboards are provisioned as files")
    scrape_interval: str = setting("scrapeInterval", DURATION, "Prometheus scrape interval", "3.7 step 1")
    app_metrics_path: str = setting("appMetricsPath", pattern(r"(/[A-Za-z0-9_.-]+)+", "a URL path"),
                                    "hft_system metrics path", "3.7 step 1")
    node_exporter_package: str = setting("nodeExporterPackage", PACKAGE, "node_exporter package, on every host",
                                         "3.3 step 4")
    node_exporter_port: int = setting("nodeExporterPort", integer(1024, 65535), "node_exporter port", "3.7 step 1")
    prometheus_port: int = setting("prometheusPort", integer(1024, 65535), "Prometheus port", "11.1")


def render_prometheus(m: MonitoringSettings, app_targets: Sequence[tuple[str, str]],
                      node_targets: Sequence[str]) -> str:
    """The runbook's scrape config, with one target per app placement (labelled by color)."""
    doc = {
        "global": {"scrape_interval": m.scrape_interval},
        "scrape_configs": [
            {"job_name": "hft_system", "metrics_path": m.app_metrics_path,
             "static_configs": [{"targets": [target], "labels": {"color": color}}
                                for color, target in app_targets]},
            {"job_name": "node_exporter", "static_configs": [{"targets": list(node_targets)}]},
        ],
    }
    return "# Managed by hft-deploy (runbook 3.7).\n" + yaml.safe_dump(doc, sort_keys=False)


@dataclass
class MonitoringArgs:
    server: Server
    """The monitoring host."""
    monitoring: MonitoringSettings
    """What to install and how to scrape."""
    app_targets: Sequence[tuple[str, str]]
    """(color, host:port) of every app placement, as reached from the monitoring host."""
    node_targets: Sequence[str]
    """host:port of every host's node_exporter."""
    after: Sequence[pulumi.Resource]
    """Steps this waits for."""


class Monitoring(pulumi.ComponentResource):
    ready: pulumi.Resource

    def __init__(self, name: str, args: MonitoringArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("hft:monitoring:Monitoring", name, None, opts)
        m = args.monitoring
        files = {"prometheus.yml": render_prometheus(m, args.app_targets, args.node_targets),
                 **payload_dir(DASHBOARDS, "dashboards", ["*.json"])}
        step = Step(f"{name}-prometheus", "monitoring.sh", {
            "HFT_MONITORING_PACKAGES": " ".join(m.packages), "HFT_GRAFANA": "1" if m.grafana else "0",
            "HFT_PROMETHEUS_URL": f"http://127.0.0.1:{m.prometheus_port}",
        }, files)
        self.step, self.fingerprint = step, step.fingerprint
        self.ready = step.create(args.server.connection, self, depends_on=list(args.after))
        self.register_outputs({"prometheus": f"{args.server.host.address}:{m.prometheus_port}"})
