#!/usr/bin/env bash
# Runbook 3.2 step 2 "Verify after reboot": `uname -r` must match HFT_RT_PATTERN.
#
# env:     HFT_RT_PATTERN  extended regex for `uname -r` (required)
# payload: lib.sh
# stdin:   not read.
set -euo pipefail
source "$HFT_PAYLOAD/lib.sh"

require_env HFT_RT_PATTERN
release=$(uname -r)
grep -Eq -- "$HFT_RT_PATTERN" <<<"$release" \
  || die "kernel $release does not match $HFT_RT_PATTERN (RT kernel not running)"
ok "kernel $release matches $HFT_RT_PATTERN"
