#!/usr/bin/env bash
# Runbook 3.1 step 3: hostname, /etc/hosts entries, static network (netplan).
#
# env:
#   HFT_HOSTNAME        hostname to set (required)
#   HFT_APPLY_NETWORK   1: install netplan.yaml and `netplan apply`; 0 (lab): skip (default 0)
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
if is_true "${HFT_APPLY_NETWORK:-0}"; then
  if [ -f "$HFT_PAYLOAD/netplan.yaml" ]; then
    command -v netplan >/dev/null || die "HFT_APPLY_NETWORK=1 but netplan is not installed"
    install_file "$HFT_PAYLOAD/netplan.yaml" /etc/netplan/00-installer-config.yaml 600 root:root
    if [ "$FILE_CHANGED" = 1 ]; then
      netplan apply || die "netplan apply failed"
      changed "network applied (netplan apply)"
    fi
  else
    skipped "network (no netplan.yaml payload)"
  fi
else
  skipped "network (container host)"
fi

if [ "$HFT_CHANGES" -eq 0 ]; then ok "server: no changes"; else echo "changed: server: $HFT_CHANGES change(s)"; fi
