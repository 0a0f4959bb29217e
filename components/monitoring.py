"""Monitoring: Prometheus with the runbook's scrape config, node_exporter, Grafana dashboards (runbook 3.7).

Dashboards are JSON files in ``monitoring/dashboards/``; where Grafana is not configured (the
lab) they are provisioned as files on the host and the script says Grafana was skipped.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import yaml

from components.config import REPO, Monitoring as MonitoringConfig
from components.remote import Step, payload_dir
from components.server import Server

DASHBOARDS = REPO / "monitoring" / "dashboards"


def render_prometheus(m: MonitoringConfig, app_target: str, node_target: str) -> str:
    doc = {
        "global": {"scrape_interval": m.scrape_interval},
        "scrape_configs": [
            {"job_name": "hft_system", "static_configs": [{"targets": [app_target]}],
             "metrics_path": m.app_metrics_path},
            {"job_name": "node_exporter", "static_configs": [{"targets": [node_target]}]},
        ],
    }
    return "# Managed by hft-deploy (runbook 3.7).\n" + yaml.safe_dump(doc, sort_keys=False)


@dataclass
class MonitoringArgs:
    server: Server
    monitoring: MonitoringConfig
    app_target: str
    after: pulumi.Resource


class Monitoring(pulumi.ComponentResource):
    ready: pulumi.Resource

    def __init__(self, name: str, args: MonitoringArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("hft:monitoring:Monitoring", name, None, opts)
        m = args.monitoring
        files = {"prometheus.yml": render_prometheus(m, args.app_target, f"localhost:{m.node_exporter_port}"),
                 **payload_dir(DASHBOARDS, "dashboards", ["*.json"])}
        step = Step(f"{name}-monitoring", "monitoring.sh", {
            "HFT_MONITORING_PACKAGES": " ".join(m.packages), "HFT_GRAFANA": "1" if m.grafana else "0",
        }, files)
        self.fingerprint = step.fingerprint
        self.ready = step.create(args.server.connection, self, depends_on=[args.after])
        self.register_outputs({"prometheus": f"{args.server.host.address}:9090"})
