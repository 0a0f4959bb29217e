#!/usr/bin/env bash
# Runbook 3.7: Prometheus and node_exporter from Debian's packages with the runbook's scrape
# config; Grafana dashboards provisioned as files (Grafana itself only where its repository is
# configured).
#
# env:
#   HFT_MONITORING_PACKAGES   "prometheus prometheus-node-exporter" (required)
#   HFT_GRAFANA               1: install grafana (from a configured apt repository) and provision
#                             the dashboards into it; 0: skipped (default 0)
#   HFT_PROMETHEUS_URL        default http://127.0.0.1:9090
#   HFT_PROMETHEUS_TIMEOUT    seconds to wait for /-/healthy (default 60)
# payload: lib.sh, prometheus.yml (checked with `promtool check config`, then
#          -> /etc/prometheus/prometheus.yml), dashboards/*.json (-> /var/lib/hft-deploy/dashboards;
#          with Grafana also a provider file /etc/grafana/provisioning/dashboards/hft-deploy.yaml)
# stdin: not read.
set -euo pipefail
source "$HFT_PAYLOAD/lib.sh"

require_env HFT_MONITORING_PACKAGES
require_payload prometheus.yml dashboards
prom_url=${HFT_PROMETHEUS_URL:-http://127.0.0.1:9090}
timeout=${HFT_PROMETHEUS_TIMEOUT:-60}
# shellcheck disable=SC2086
install_packages $HFT_MONITORING_PACKAGES curl

# Prometheus config: checked before it replaces the live one
command -v promtool >/dev/null || die "promtool not found (package prometheus)"
if ! out=$(promtool check config "$HFT_PAYLOAD/prometheus.yml" 2>&1); then
  die "prometheus.yml rejected by promtool: $(tr '\n' ' ' <<<"$out")"
fi
ok "prometheus.yml passes promtool check config"
install_file "$HFT_PAYLOAD/prometheus.yml" /etc/prometheus/prometheus.yml 644 root:root
prom_changed=$FILE_CHANGED

for svc in prometheus prometheus-node-exporter; do
  case " $HFT_MONITORING_PACKAGES " in *" $svc "*) ;; *) continue ;; esac
  if ! systemctl is-enabled --quiet "$svc" 2>/dev/null; then
    systemctl enable --quiet "$svc"; changed "$svc enabled"
  fi
  if ! systemctl is-active --quiet "$svc"; then
    systemctl start "$svc" || { journalctl -u "$svc" -n 20 --no-pager >&2; die "cannot start $svc"; }
    changed "$svc started"
  elif [ "$svc" = prometheus ] && [ "$prom_changed" = 1 ]; then
    systemctl restart prometheus || { journalctl -u prometheus -n 20 --no-pager >&2; die "cannot restart prometheus"; }
    changed "prometheus restarted (config changed)"
  else
    ok "$svc running"
  fi
done

# dashboards: the directory mirrors the payload exactly
sync_dir() {
  local from=$1 to=$2 f n
  ensure_dir "$to" 755 root:root >/dev/null
  for f in "$from"/*.json; do
    [ -f "$f" ] || continue
    install_file "$f" "$to/$(basename "$f")" 644 root:root >/dev/null
    if [ "$FILE_CHANGED" = 1 ]; then echo "changed: dashboard $to/$(basename "$f")"; fi
  done
  for f in "$to"/*.json; do
    [ -f "$f" ] || continue
    n=$(basename "$f")
    if [ ! -f "$from/$n" ]; then rm -f "$f"; changed "dashboard $f removed"; fi
  done
}
before=$HFT_CHANGES
sync_dir "$HFT_PAYLOAD/dashboards" /var/lib/hft-deploy/dashboards
[ "$HFT_CHANGES" -ne "$before" ] || ok "dashboards in /var/lib/hft-deploy/dashboards ($(find /var/lib/hft-deploy/dashboards -name '*.json' | wc -l) files)"

if is_true "${HFT_GRAFANA:-0}"; then
  if ! pkg_installed grafana; then
    apt_update_once
    pkg_installable grafana || die "grafana is not installable: configure the Grafana apt repository (runbook 3.3 step 4) or set Grafana off"
    install_packages grafana
  fi
  prov=$(mktemp)
  cat >"$prov" <<'YAML'
apiVersion: 1
providers:
  - name: hft-deploy
    type: file
    disableDeletion: true
    updateIntervalSeconds: 30
    options:
      path: /var/lib/hft-deploy/dashboards
YAML
  install_file "$prov" /etc/grafana/provisioning/dashboards/hft-deploy.yaml 644 root:root
  rm -f "$prov"
  if [ "$FILE_CHANGED" = 1 ] || ! systemctl is-active --quiet grafana-server; then
    systemctl enable --quiet grafana-server
    systemctl restart grafana-server || die "cannot start grafana-server"
    changed "grafana-server (re)started"
  else
    ok "grafana-server running"
  fi
else
  skipped "grafana (not configured); dashboards provisioned as files"
fi

if wait_http "$prom_url/-/healthy" "$timeout"; then
  ok "prometheus healthy ($prom_url/-/healthy)"
else
  journalctl -u prometheus -n 30 --no-pager >&2 || true
  die "prometheus not healthy at $prom_url/-/healthy after $timeout s"
fi

if [ "$HFT_CHANGES" -eq 0 ]; then ok "monitoring: no changes"; else echo "changed: monitoring: $HFT_CHANGES change(s)"; fi
