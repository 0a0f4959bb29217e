"""NodeExporter: node_exporter on one host, for the monitoring host's Prometheus (runbook 3.7)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi

from components.remote import Step
from components.server import Server


@dataclass
class NodeExporterArgs:
    server: Server
    """The host."""
    package: str
    """Debian package (prometheus-node-exporter)."""
    port: int
    """Port it answers on."""
    after: pulumi.Resource
    """The step it waits for (apt is one at a time per host anyway)."""


class NodeExporter(pulumi.ComponentResource):
    ready: pulumi.Resource

    def __init__(self, name: str, args: NodeExporterArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("hft:monitoring:NodeExporter", name, None, opts)
        step = Step(f"{name}-node-exporter", "node_exporter.sh", {
            "HFT_NODE_EXPORTER_PACKAGE": args.package, "HFT_NODE_EXPORTER_PORT": str(args.port)})
        self.fingerprint = step.fingerprint
        self.ready = step.create(args.server.connection, self, depends_on=[args.after])
        self.register_outputs({})
