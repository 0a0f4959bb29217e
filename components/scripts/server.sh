#!/usr/bin/env bash
# Runbook 3.1 step 3: hostname, /etc/hosts entries, static network (netplan).
#
# The network is changed so that a wrong config cannot cut the deployer off (confirm or
# revert): the new netplan file is checked (`netplan generate` in a scratch root), /etc/netplan
# is backed up, a timer is armed that restores the backup and re-applies it after
# HFT_NETPLAN_REVERT_SECONDS, and `netplan apply` runs in a transient unit of its own (not in
# this SSH session, which a wrong config would freeze). This script waits for the apply and
# exits; netplan_confirm.sh, run by the next step over a NEW SSH connection, cancels the
# timer. If that connection cannot be made, the host restores its previous network by itself
# and the confirm step fails saying so. A failed `netplan apply` restores the backup at once.
# State in /var/lib/hft-deploy/netplan (root, 700): backup/, state ("applied SHA UPTIME",
# "failed SHA", "reverted SHA", "confirmed SHA"), apply.log, revert.log.
#
# env:
#   HFT_HOSTNAME               hostname to set (required)
#   HFT_APPLY_NETWORK          1: install netplan.yaml, apply it with confirm-or-revert; 0 (lab,
#                              container hosts): skip (default 0)
#   HFT_NETPLAN_REVERT_SECONDS seconds the host waits for the confirming connection before it
#                              restores its previous network (default 120)
# payload ($HFT_PAYLOAD):
#   lib.sh              shared helpers
#   hosts.block         lines kept between "# BEGIN hft-deploy" / "# END hft-deploy" in /etc/hosts
#   netplan.yaml        optional; -> /etc/netplan/00-installer-config.yaml (600) when applied
# stdin: not read.
set -euo pipefail
source "$HFT_PAYLOAD/lib.sh"

require_env HFT_HOSTNAME
require_payload hosts.block
name=$HFT_HOSTNAME
[[ "$name" =~ ^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$ ]] || die "invalid hostname: $name"

# hostname
current=$(hostname)
file_name=$(cat /etc/hostname 2>/dev/null || true)
if [ "$current" = "$name" ] && [ "$file_name" = "$name" ]; then
  ok "hostname $name"
else
  if hostnamectl set-hostname "$name" >/dev/null 2>&1 && [ "$(cat /etc/hostname 2>/dev/null)" = "$name" ]; then
    :
  else
    printf '%s\n' "$name" >/etc/hostname
  fi
  [ "$(hostname)" = "$name" ] || hostname "$name"
  [ "$(hostname)" = "$name" ] || die "hostname is still $(hostname), expected $name"
  changed "hostname $current -> $name"
fi

# /etc/hosts
replace_block /etc/hosts "$HFT_PAYLOAD/hosts.block" bottom

# network
NETPLAN_FILE=/etc/netplan/00-installer-config.yaml
NET_DIR=/var/lib/hft-deploy/netplan

# write_net_helpers: the two scripts the transient units run (root's, in NET_DIR). Each takes
# NET_DIR's lock, so the revert and the confirmation never interleave.
write_net_helpers() {
  cat >"$NET_DIR/apply.sh" <<'APPLY'
#!/bin/bash
# hft-deploy: apply the new netplan (run by the transient unit hft-netplan-apply).
set -u
dir=/var/lib/hft-deploy/netplan sha=$1
exec 9>"$dir/lock"; flock 9
if netplan apply >"$dir/apply.log" 2>&1; then
  printf 'applied %s %s\n' "$sha" "$(cut -d' ' -f1 /proc/uptime)" >"$dir/state.new"
else
  systemctl stop hft-netplan-revert.timer >/dev/null 2>&1
  find /etc/netplan -maxdepth 1 -name '*.yaml' -delete
  cp -a "$dir/backup/." /etc/netplan/
  netplan apply >>"$dir/apply.log" 2>&1
  printf 'failed %s\n' "$sha" >"$dir/state.new"
fi
mv -f "$dir/state.new" "$dir/state"
APPLY
  cat >"$NET_DIR/revert.sh" <<'REVERT'
#!/bin/bash
# hft-deploy: no connection confirmed the new netplan in time: restore the previous one
# (run by the transient timer hft-netplan-revert).
set -u
dir=/var/lib/hft-deploy/netplan sha=$1
exec 9>"$dir/lock"; flock 9
case "$(cat "$dir/state" 2>/dev/null)" in "confirmed $sha"*|"failed $sha"*) exit 0 ;; esac
find /etc/netplan -maxdepth 1 -name '*.yaml' -delete
cp -a "$dir/backup/." /etc/netplan/
netplan apply >"$dir/revert.log" 2>&1
printf 'reverted %s %s\n' "$sha" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$dir/state.new"
mv -f "$dir/state.new" "$dir/state"
REVERT
  chmod 700 "$NET_DIR/apply.sh" "$NET_DIR/revert.sh"
}

net_state() { cat "$NET_DIR/state" 2>/dev/null || true; }

apply_network() {
  local new=$HFT_PAYLOAD/netplan.yaml revert=${HFT_NETPLAN_REVERT_SECONDS:-120} sha scratch state waited=0 log
  [[ "$revert" =~ ^[0-9]+$ ]] && [ "$revert" -ge 30 ] || die "HFT_NETPLAN_REVERT_SECONDS=$revert: expected a number of seconds >= 30"
  command -v netplan >/dev/null || die "HFT_APPLY_NETWORK=1 but netplan is not installed (apt-get install netplan.io)"
  command -v systemd-run >/dev/null || die "systemd-run not found: needed to apply the network with a revert timer"
  sha=$(sha256sum <"$new" | cut -c1-64)
  if [ -f "$NETPLAN_FILE" ] && [ ! -L "$NETPLAN_FILE" ] && cmp -s "$new" "$NETPLAN_FILE" \
     && [ "$(_mode_of "$NETPLAN_FILE")" = 600 ]; then
    ok "network: $NETPLAN_FILE already the configured one"
    return 0
  fi
  if systemctl is-active --quiet hft-netplan-revert.timer; then
    die "an earlier network change is still waiting for its confirmation ($(net_state)); it reverts by itself within ${revert} s: run again after that"
  fi
  # the new file alone, generated in a scratch root: a config netplan refuses changes nothing
  scratch=$(mktemp -d)
  mkdir -p "$scratch/etc/netplan"
  install -m 600 "$new" "$scratch/etc/netplan/00-installer-config.yaml"
  if ! log=$(netplan generate --root-dir "$scratch" 2>&1); then
    rm -rf "$scratch"
    die "netplan refuses the rendered network config (nothing changed): $(tail -n 5 <<<"$log" | tr '\n' ' ')"
  fi
  rm -rf "$scratch"
  no_symlink_in "$NET_DIR"
  mkdir -p -m 700 "$NET_DIR"
  chmod 700 "$NET_DIR"
  rm -rf "$NET_DIR/backup"
  mkdir -m 700 "$NET_DIR/backup"
  if [ -d /etc/netplan ]; then cp -a /etc/netplan/. "$NET_DIR/backup/"; fi
  write_net_helpers
  rm -f "$NET_DIR/state"
  systemctl reset-failed hft-netplan-revert.timer hft-netplan-revert.service hft-netplan-apply.service >/dev/null 2>&1 || true
  systemd-run --quiet --unit=hft-netplan-revert --on-active="${revert}s" --timer-property=AccuracySec=1s \
    /bin/bash "$NET_DIR/revert.sh" "$sha" || die "could not arm the revert timer (systemd-run); nothing changed"
  install_file "$new" "$NETPLAN_FILE" 600 root:root
  # Applied outside this session: a wrong config freezes this connection, not the apply.
  systemd-run --quiet --unit=hft-netplan-apply --collect --no-block /bin/bash "$NET_DIR/apply.sh" "$sha" \
    || { systemctl stop hft-netplan-revert.timer; cp -a "$NET_DIR/backup/." /etc/netplan/; die "could not start netplan apply (systemd-run); previous file restored"; }
  while :; do
    state=$(net_state)
    case "$state" in
      "applied $sha "*) break ;;
      "failed $sha"*) die "netplan apply failed, the previous network config is back: $(tail -n 5 "$NET_DIR/apply.log" | tr '\n' ' ')" ;;
      "reverted $sha"*) die "the new network was reverted after ${revert} s before it was confirmed" ;;
    esac
    [ "$waited" -ge $((revert + 60)) ] && die "netplan apply did not finish within $((revert + 60)) s (state: ${state:-none})"
    sleep 1; waited=$((waited + 1))
  done
  changed "network applied (netplan apply); the host restores the previous one by itself in ${revert} s unless a new connection confirms it"
}

if is_true "${HFT_APPLY_NETWORK:-0}"; then
  if [ -f "$HFT_PAYLOAD/netplan.yaml" ]; then
    apply_network
  else
    skipped "network (no netplan.yaml payload)"
  fi
else
  skipped "network (container host)"
fi

if [ "$HFT_CHANGES" -eq 0 ]; then ok "server: no changes"; else echo "changed: server: $HFT_CHANGES change(s)"; fi
