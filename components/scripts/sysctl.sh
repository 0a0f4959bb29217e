#!/usr/bin/env bash
# Runbook 3.2 step 3 (sysctl): the kernel settings as a sysctl.d file, applied to the running
# kernel where it can be (not on a container host, which shares another machine's kernel).
# Applied whenever the file changed or a value in effect differs from it (repairs hand edits).
# A key this kernel does not have fails the step naming it, before any key is applied; fewer
# huge pages than asked for fail it with both numbers.
# Last line: HFT_SYSCTL_REPORT={"status": ..., "hugepages": ...}, what the host reported.
#
# env:
#   HFT_APPLY_SYSCTL        1: `sysctl -p` the file (fails naming the key); 0: skipped
#   HFT_KERNEL_SKIP_REASON  why applying is skipped ("container host", "disabled in config")
# payload: lib.sh, sysctl.conf (-> /etc/sysctl.d/90-hft.conf, 644 root)
# stdin: not read.
set -euo pipefail
source "$HFT_PAYLOAD/lib.sh"

require_payload sysctl.conf
install_file "$HFT_PAYLOAD/sysctl.conf" /etc/sysctl.d/90-hft.conf 644 root:root
file_changed=$FILE_CHANGED
if is_true "${HFT_APPLY_SYSCTL:-0}"; then
  # Every key must exist in this kernel before any is applied: `sysctl -p` goes on past an
  # unknown key, so one bad key would leave the others applied and the step failed.
  unknown=()
  while IFS='=' read -r key value; do
    key=$(echo "$key" | xargs)
    [ -z "$key" ] || [[ "$key" == \#* ]] || [[ "$key" == \;* ]] && continue
    [ -e "/proc/sys/${key//./\/}" ] || unknown+=("$key")
  done <"$HFT_PAYLOAD/sysctl.conf"
  [ ${#unknown[@]} -eq 0 ] || die "sysctl keys this kernel does not have on $(hostname): ${unknown[*]} (nothing applied; remove them from hft:baseline.sysctl)"
  drift=0
  while IFS='=' read -r key value; do
    key=$(echo "$key" | xargs); value=$(echo "$value" | xargs)
    [ -z "$key" ] || [[ "$key" == \#* ]] || [[ "$key" == \;* ]] && continue
    cur=$(sysctl -n "$key" 2>/dev/null | xargs || true)
    [ "$cur" = "$value" ] || drift=1
  done </etc/sysctl.d/90-hft.conf
  if [ "$drift" = 1 ] || [ "$file_changed" = 1 ]; then
    err=$(sysctl -p /etc/sysctl.d/90-hft.conf 2>&1 >/dev/null) || die "sysctl -p failed: $(tr '\n' ' ' <<<"$err")"
    changed "sysctl applied"
    status=applied
  else
    ok "sysctl values in effect"
    status="in effect"
  fi
  hugepages=$(cat /proc/sys/vm/nr_hugepages 2>/dev/null || echo unknown)
  want=$(sed -n 's/^[[:space:]]*vm\.nr_hugepages[[:space:]]*=[[:space:]]*\([0-9]*\).*/\1/p' /etc/sysctl.d/90-hft.conf | tail -n 1)
  if [ -n "$want" ] && [ "$hugepages" != "$want" ]; then
    die "vm.nr_hugepages: the kernel allocated $hugepages of the $want huge pages asked for (not enough free memory on $(hostname)); lower hft:baseline.sysctl[\"vm.nr_hugepages\"] or free memory"
  fi
else
  status="skipped: ${HFT_KERNEL_SKIP_REASON:-disabled in config}"
  skipped "sysctl apply (${HFT_KERNEL_SKIP_REASON:-disabled in config})"
  hugepages=$status
fi
echo "HFT_SYSCTL_REPORT={\"status\":$(json_str "$status"),\"hugepages\":$(json_str "$hugepages")}"
