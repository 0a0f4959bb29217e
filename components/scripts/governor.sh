#!/usr/bin/env bash
# Runbook 3.2 step 4: the CPU frequency governor, now (sysfs) and at boot (cpufrequtils).
# Last line: HFT_GOVERNOR_REPORT={"status": ...}, what the host reported.
#
# env:
#   HFT_CPU_GOVERNOR        e.g. "performance"; empty: skipped
#   HFT_KERNEL_SKIP_REASON  why it is skipped when empty ("container host", "disabled in config")
# payload: lib.sh
# stdin: not read.
set -euo pipefail
source "$HFT_PAYLOAD/lib.sh"

gov=${HFT_CPU_GOVERNOR:-}
report() { echo "HFT_GOVERNOR_REPORT={\"status\":$(json_str "$1")}"; }
if [ -z "$gov" ]; then
  skipped "cpu governor (${HFT_KERNEL_SKIP_REASON:-disabled in config})"
  report "skipped: ${HFT_KERNEL_SKIP_REASON:-disabled in config}"
  exit 0
fi
install_packages cpufrequtils
tmp=$(mktemp); printf 'GOVERNOR="%s"\n' "$gov" >"$tmp"
install_file "$tmp" /etc/default/cpufrequtils 644 root:root
rm -f "$tmp"
files=(/sys/devices/system/cpu/cpu*/cpufreq/scaling_governor)
if [ ! -e "${files[0]}" ]; then
  skipped "cpu governor runtime (no cpufreq on this host)"
  report "skipped: no cpufreq on this host"
  exit 0
fi
n=0
for f in "${files[@]}"; do
  if [ "$(cat "$f")" != "$gov" ]; then
    echo "$gov" >"$f" || die "cannot set $f to $gov"
    n=$((n + 1))
  fi
done
if [ "$n" -gt 0 ]; then changed "cpu governor $gov on $n cpu(s)"; else ok "cpu governor $gov on ${#files[@]} cpu(s)"; fi
report "$gov on ${#files[@]} cpu(s)"
