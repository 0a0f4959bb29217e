#!/usr/bin/env bash
# Runbook 3.2 steps 1, 3, 4, 5 and 3.3 steps 1-2: apt upgrade, limits, sysctl, CPU governor,
# disabled services, build tools and libraries, gcc alternatives.
#
# env:
#   HFT_APPLY_SYSCTL       1: `sysctl -p /etc/sysctl.d/90-hft.conf` (fails on error); 0: skipped
#   HFT_CPU_GOVERNOR       e.g. "performance"; empty: skipped
#   HFT_KERNEL_SKIP_REASON why sysctl apply / governor are skipped when they are
#                          ("container host" in the lab; default "disabled in config")
#   HFT_DISABLED_SERVICES  space-separated units to `systemctl disable --now` (absent ones: ok)
#   HFT_APT_UPGRADE        1: apt-get upgrade -y; 0: skipped
#   HFT_PACKAGES           space-separated Debian packages to install when missing
#   HFT_GCC_ALTERNATIVES   e.g. "12": gcc/g++ alternatives to gcc-12/g++-12 (priority 100); empty: skipped
# payload: lib.sh, limits.conf (-> /etc/security/limits.d/90-hft.conf),
#          sysctl.conf (-> /etc/sysctl.d/90-hft.conf)
# stdin: not read.
set -euo pipefail
source "$HFT_PAYLOAD/lib.sh"

require_payload limits.conf sysctl.conf

# 3.2 step 1: update system
if is_true "${HFT_APT_UPGRADE:-0}"; then
  apt_update_once
  n=$(apt-get -s -o Debug::NoLocking=1 upgrade 2>/dev/null | grep -c '^Inst ' || true)
  if [ "$n" -eq 0 ]; then
    ok "apt upgrade: nothing to upgrade"
  else
    log=$(mktemp)
    DEBIAN_FRONTEND=noninteractive apt_get -q -y -o DPkg::Lock::Timeout=300 \
      -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold upgrade >"$log" 2>&1 \
      || { tail -n 30 "$log" >&2; die "apt-get upgrade failed"; }
    rm -f "$log"
    changed "apt upgrade: $n package(s) upgraded"
  fi
else
  skipped "apt upgrade (HFT_APT_UPGRADE=0)"
fi

# 3.2 step 3: limits and sysctl
install_file "$HFT_PAYLOAD/limits.conf" /etc/security/limits.d/90-hft.conf 644 root:root
install_file "$HFT_PAYLOAD/sysctl.conf" /etc/sysctl.d/90-hft.conf 644 root:root
sysctl_changed=$FILE_CHANGED
if is_true "${HFT_APPLY_SYSCTL:-0}"; then
  # Applied every run (cheap, and repairs values changed by hand); reported by what differs.
  drift=0
  while IFS='=' read -r key value; do
    key=$(echo "$key" | xargs); value=$(echo "$value" | xargs)
    [ -z "$key" ] || [[ "$key" == \#* ]] || [[ "$key" == \;* ]] && continue
    cur=$(sysctl -n "$key" 2>/dev/null | xargs || true)
    [ "$cur" = "$(echo "$value" | xargs)" ] || drift=1
  done </etc/sysctl.d/90-hft.conf
  if [ "$drift" = 1 ] || [ "$sysctl_changed" = 1 ]; then
    out=$(sysctl -p /etc/sysctl.d/90-hft.conf 2>&1) || die "sysctl -p failed: $(tail -n 3 <<<"$out" | tr '\n' ' ')"
    changed "sysctl applied"
  else
    ok "sysctl values in effect"
  fi
else
  skipped "sysctl apply (${HFT_KERNEL_SKIP_REASON:-disabled in config})"
fi

# 3.2 step 4: CPU governor
gov=${HFT_CPU_GOVERNOR:-}
if [ -z "$gov" ]; then
  skipped "cpu governor (${HFT_KERNEL_SKIP_REASON:-disabled in config})"
else
  install_packages cpufrequtils
  tmp=$(mktemp); printf 'GOVERNOR="%s"\n' "$gov" >"$tmp"
  install_file "$tmp" /etc/default/cpufrequtils 644 root:root
  rm -f "$tmp"
  files=(/sys/devices/system/cpu/cpu*/cpufreq/scaling_governor)
  if [ ! -e "${files[0]}" ]; then
    skipped "cpu governor runtime (no cpufreq in /sys: container or VM)"
  else
    n=0
    for f in "${files[@]}"; do
      if [ "$(cat "$f")" != "$gov" ]; then
        echo "$gov" >"$f" || die "cannot set $f to $gov"
        n=$((n + 1))
      fi
    done
    if [ "$n" -gt 0 ]; then changed "cpu governor $gov on $n cpu(s)"; else ok "cpu governor $gov on ${#files[@]} cpu(s)"; fi
  fi
fi

# 3.2 step 5: disable services
for svc in ${HFT_DISABLED_SERVICES:-}; do
  load=$(systemctl show -p LoadState --value "$svc" 2>/dev/null || true)
  if [ "$load" != loaded ]; then
    ok "$svc not installed"
    continue
  fi
  enabled=$(systemctl is-enabled "$svc" 2>/dev/null || true)
  active=$(systemctl is-active "$svc" 2>/dev/null || true)
  if [ "$enabled" = enabled ] || [ "$active" = active ] || [ "$active" = activating ]; then
    systemctl disable --now "$svc" >/dev/null 2>&1 || die "systemctl disable --now $svc failed"
    changed "$svc disabled and stopped"
  else
    ok "$svc disabled ($enabled, $active)"
  fi
done

# 3.3 steps 1-2: packages
# shellcheck disable=SC2086
install_packages ${HFT_PACKAGES:-}

# 3.3 step 1: gcc alternatives
v=${HFT_GCC_ALTERNATIVES:-}
if [ -z "$v" ]; then
  skipped "gcc alternatives (not configured)"
elif [ ! -x "/usr/bin/gcc-$v" ] || [ ! -x "/usr/bin/g++-$v" ]; then
  skipped "gcc alternatives (gcc-$v/g++-$v not installed)"
else
  for tool in gcc g++; do
    q=$(update-alternatives --query "$tool" 2>/dev/null || true)
    if grep -qx "Alternative: /usr/bin/$tool-$v" <<<"$q" && grep -qx "Value: /usr/bin/$tool-$v" <<<"$q"; then
      ok "$tool alternative -> $tool-$v"
    else
      update-alternatives --quiet --install "/usr/bin/$tool" "$tool" "/usr/bin/$tool-$v" 100 \
        || die "update-alternatives for $tool failed"
      update-alternatives --quiet --set "$tool" "/usr/bin/$tool-$v" || die "update-alternatives --set $tool failed"
      changed "$tool alternative -> $tool-$v (priority 100)"
    fi
  done
fi

if [ "$HFT_CHANGES" -eq 0 ]; then ok "baseline: no changes"; else echo "changed: baseline: $HFT_CHANGES change(s)"; fi
