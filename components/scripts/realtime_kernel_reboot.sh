#!/usr/bin/env bash
# Runbook 3.2 step 2 "Reboot": reboots the host when the newest installed kernel matching
# HFT_RT_PATTERN is not the running one, 5 s after this script returns (so its SSH session
# ends cleanly); otherwise does nothing. realtime_kernel_await.sh, on the deployer's machine,
# then waits for the host to come back, and realtime_kernel_verify.sh checks the kernel.
# Last line: HFT_RT_REBOOT_REPORT={"reboot": true|false, "from": ..., "to": ..., "boot_id": ...}
# ("boot_id": the boot that was running, so the verify step can tell a new boot from it).
#
# HFT_RT_PATTERN may be given per OS family (HFT_RT_PATTERN_DEBIAN, _UBUNTU), chosen on the
# host by its /etc/os-release (lib.sh by_family).
# env:
#   HFT_RT_PATTERN       extended regex matched against `uname -r`, e.g. "-rt"
#   HFT_RT_REBOOT_GUARD  a unit (the trading primary's service) that, while active, makes a
#                        needed reboot fail instead (the host keeps running, and trading)
# payload: lib.sh
# stdin: not read.
set -euo pipefail
source "$HFT_PAYLOAD/lib.sh"

HFT_RT_PATTERN=$(by_family HFT_RT_PATTERN)
release=$(uname -r)
boot_id=$(cat /proc/sys/kernel/random/boot_id)
newest=$(for f in /boot/vmlinuz-*; do [ -e "$f" ] && printf '%s\n' "${f#/boot/vmlinuz-}"; done \
  | grep -E -- "$HFT_RT_PATTERN" | sort -V | tail -n 1 || true)
report() {
  echo "HFT_RT_REBOOT_REPORT={\"reboot\":$1,\"from\":$(json_str "$release"),\"to\":$(json_str "$2"),\"boot_id\":$(json_str "$boot_id")}"
}
if [ -z "$newest" ]; then
  grep -Eq -- "$HFT_RT_PATTERN" <<<"$release" \
    || die "no installed kernel matches $HFT_RT_PATTERN (running $release): nothing to reboot into"
  newest=$release
fi
if [ "$newest" = "$release" ]; then
  ok "running $release, the newest installed kernel matching $HFT_RT_PATTERN: no reboot"
  report false "$release"
  exit 0
fi
if [ -n "${HFT_RT_REBOOT_GUARD:-}" ] && systemctl is-active --quiet "$HFT_RT_REBOOT_GUARD"; then
  die "not rebooting into $newest (running $release): $HFT_RT_REBOOT_GUARD is active and this host carries the trading primary; cut over first (hft:release.live to the other color), or set hft:service.allowPrimaryRestart to accept the outage"
fi
if command -v systemd-run >/dev/null && systemd-run --quiet --on-active=5 systemctl reboot; then
  :
else
  nohup sh -c 'sleep 5; shutdown -r now' >/dev/null 2>&1 &
fi
changed "rebooting into $newest in 5 s (running $release)"
report true "$newest"
