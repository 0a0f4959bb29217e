#!/usr/bin/env bash
# Runbook 3.2 step 2 "Verify after reboot": `uname -r` must match HFT_RT_PATTERN and be the
# newest installed kernel matching it (what the reboot was for: GRUB boots the highest
# version), and where the kernel says whether it is PREEMPT_RT (/sys/kernel/realtime), it
# must say 1.
#
# env:     HFT_RT_PATTERN  extended regex for `uname -r` (or per OS family: HFT_RT_PATTERN_DEBIAN /
#                          _UBUNTU, chosen on the host)
# payload: lib.sh
# stdin:   not read.
set -euo pipefail
source "$HFT_PAYLOAD/lib.sh"

HFT_RT_PATTERN=$(by_family HFT_RT_PATTERN)
release=$(uname -r)
grep -Eq -- "$HFT_RT_PATTERN" <<<"$release" \
  || die "kernel $release does not match $HFT_RT_PATTERN (RT kernel not running): check the GRUB default entry"
newest=$(for f in /boot/vmlinuz-*; do [ -e "$f" ] && printf '%s\n' "${f#/boot/vmlinuz-}"; done \
  | grep -E -- "$HFT_RT_PATTERN" | sort -V | tail -n 1 || true)
if [ -n "$newest" ] && [ "$newest" != "$release" ]; then
  die "running $release, but the newest installed kernel matching $HFT_RT_PATTERN is $newest: check the GRUB default entry"
fi
if [ -e /sys/kernel/realtime ]; then
  [ "$(cat /sys/kernel/realtime)" = 1 ] || die "kernel $release matches $HFT_RT_PATTERN but /sys/kernel/realtime is not 1"
  ok "kernel $release matches $HFT_RT_PATTERN, /sys/kernel/realtime = 1 (PREEMPT_RT)"
else
  ok "kernel $release matches $HFT_RT_PATTERN"
fi
