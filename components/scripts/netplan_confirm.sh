#!/usr/bin/env bash
# Runbook 3.1 step 3, second half: confirm the network server.sh applied, from a NEW SSH
# connection (this step's own), which proves the deployer still reaches the host over the new
# network. Cancels the revert timer server.sh armed. When the new network cut the deployer
# off, this connection could only be made after the host restored its previous network by
# itself: the step fails saying so, naming the config key to fix.
#
# env:
#   HFT_NETPLAN_SHA256  sha256 of the netplan file server.sh installed (required)
#   HFT_NETWORK_KEY     the config key that sets this network, for the messages (required)
# payload ($HFT_PAYLOAD):
#   lib.sh              shared helpers
# stdin: not read.
set -euo pipefail
source "$HFT_PAYLOAD/lib.sh"

require_env HFT_NETPLAN_SHA256 HFT_NETWORK_KEY
sha=$HFT_NETPLAN_SHA256 key=$HFT_NETWORK_KEY
[[ "$sha" =~ ^[0-9a-f]{64}$ ]] || die "HFT_NETPLAN_SHA256=$sha: expected a sha256"
dir=/var/lib/hft-deploy/netplan
file=/etc/netplan/00-installer-config.yaml

# session_start: uptime (s) at which this SSH session's sshd process started, or empty
session_start() {
  local pid=$$ comm ppid ticks
  while [ "$pid" -gt 1 ]; do
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 0
    if [ "$comm" = sshd ] || [ "$comm" = sshd-session ]; then
      ticks=$(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $20}')
      awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", t / hz}'
      return 0
    fi
    ppid=$(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $2}')
    pid=$ppid
  done
}

[ -d "$dir" ] && [ ! -L "$dir" ] || {
  if [ -f "$file" ] && [ "$(sha256sum <"$file" | cut -c1-64)" = "$sha" ]; then ok "network: in place (nothing to confirm)"; exit 0; fi
  die "no network change of hft-deploy on this host to confirm, and $file is not the configured one: run \`pulumi up\` again (the identity step applies it)"
}
exec 9>"$dir/lock"
flock -w 60 9 || die "the network state of this host is locked (a revert running?)"
state=$(cat "$dir/state" 2>/dev/null || true)
case "$state" in
  "confirmed $sha"*)
    ok "network: confirmed earlier" ;;
  "applied $sha "*)
    applied_at=${state##* }
    started=$(session_start)
    if [ -n "$started" ] && awk -v s="$started" -v a="$applied_at" 'BEGIN {exit !(s < a)}'; then
      die "this connection was opened before the new network was applied, so it proves nothing; the host restores its previous network by itself shortly: run \`pulumi up\` again"
    fi
    systemctl stop hft-netplan-revert.timer >/dev/null 2>&1 || true
    systemctl reset-failed hft-netplan-revert.timer hft-netplan-revert.service >/dev/null 2>&1 || true
    if systemctl is-active --quiet hft-netplan-revert.timer; then die "could not cancel the revert timer"; fi
    printf 'confirmed %s\n' "$sha" >"$dir/state.new"
    mv -f "$dir/state.new" "$dir/state"
    rm -rf "$dir/backup"
    changed "network confirmed over a new connection; revert cancelled" ;;
  "reverted $sha"*)
    die "the new network config cut the deployer off: no new connection could be made, and the host restored its previous network by itself (${state#reverted $sha }). Check $key (interface, prefix, gateway) against the host's console; $dir/revert.log on the host shows the revert" ;;
  "failed $sha"*)
    die "netplan apply failed on this host and the previous network is back: $(tail -n 3 "$dir/apply.log" 2>/dev/null | tr '\n' ' '); check $key" ;;
  *)
    if [ -f "$file" ] && [ "$(sha256sum <"$file" | cut -c1-64)" = "$sha" ]; then
      ok "network: in place (nothing to confirm)"
    else
      die "the configured network is not applied on this host (state: ${state:-none}): run \`pulumi up\` again"
    fi ;;
esac
