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
# Its landing page first: a full /metrics scrape can take longer than wait_http's 3 s per try
# on a slow host (the lab VM under TCG), then one scrape given time to finish.
wait_http "http://127.0.0.1:$HFT_NODE_EXPORTER_PORT/" 60 || die "$pkg not answering on port $HFT_NODE_EXPORTER_PORT after 60 s"
curl -fsS --max-time 60 -o /dev/null "http://127.0.0.1:$HFT_NODE_EXPORTER_PORT/metrics" \
  || die "$pkg answers on port $HFT_NODE_EXPORTER_PORT but serves no /metrics within 60 s"
ok "$pkg answering on port $HFT_NODE_EXPORTER_PORT"
