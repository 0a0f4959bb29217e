#!/usr/bin/env bash
# Runbook 3.7 step 1 (node_exporter job): the host's node_exporter, installed, enabled and
# answering on its port, so the monitoring host's Prometheus can scrape every host.
#
# env:
#   HFT_NODE_EXPORTER_PACKAGE  e.g. prometheus-node-exporter (required)
#   HFT_NODE_EXPORTER_PORT     e.g. 9100 (required)
# payload: lib.sh
# stdin: not read.
set -euo pipefail
source "$HFT_PAYLOAD/lib.sh"

require_env HFT_NODE_EXPORTER_PACKAGE HFT_NODE_EXPORTER_PORT
pkg=$HFT_NODE_EXPORTER_PACKAGE
install_packages "$pkg" curl
if ! systemctl is-enabled --quiet "$pkg" 2>/dev/null; then
  systemctl enable --quiet "$pkg"; changed "$pkg enabled"
fi
if ! systemctl is-active --quiet "$pkg"; then
  systemctl start "$pkg" || die "cannot start $pkg"; changed "$pkg started"
fi
wait_http "http://127.0.0.1:$HFT_NODE_EXPORTER_PORT/metrics" 30 || die "$pkg not answering on port $HFT_NODE_EXPORTER_PORT after 30 s"
ok "$pkg answering on port $HFT_NODE_EXPORTER_PORT"
