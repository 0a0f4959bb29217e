#!/usr/bin/env bash
# Runbook 3.2 step 3 (limits): the service user's resource limits as a limits.d file.
#
# env: none
# payload: lib.sh, limits.conf (-> /etc/security/limits.d/90-hft.conf, 644 root)
# stdin: not read.
set -euo pipefail
source "$HFT_PAYLOAD/lib.sh"

require_payload limits.conf
install_file "$HFT_PAYLOAD/limits.conf" /etc/security/limits.d/90-hft.conf 644 root:root
