#!/usr/bin/env bash
# Runbook 11.1 / 3.8: installs the runbook's validation script where its operators run it,
# $HFT_HOME/scripts/validate_deployment.sh (root:root 755, in root-owned directories; this
# deploy's values are its defaults), and runs it from there. The checks, their output and
# the HFT_VALIDATION_REPORT line are that script's (see validate_deployment.sh): every check is
# run, exchange and Prometheus checks warn unless HFT_STRICT_CHECKS=1, exit 1 when any failed.
# Reads no secret (so its output, every check, is shown live during `pulumi up`): the
# database is checked through the running service.
#
# env:
#   HFT_HOME                     e.g. /opt/hft_system (required)
#   HFT_CONFIG                   e.g. /opt/hft_system/config/production.json (required)
#   HFT_UNIT_NAME                e.g. hft_system (required)
#   HFT_USER                     service user; default: User= of the unit
#   HFT_API                      e.g. http://127.0.0.1:8080 (required)
#   HFT_EXPECTED_SCHEMA_VERSION  e.g. 5 (required)
#   HFT_LOG_DIR                  e.g. /var/log/hft_system (required)
#   HFT_PROMETHEUS               e.g. http://127.0.0.1:9090 (required)
#   HFT_EXPECTED_VERSION         e.g. 1.0.0 (required)
#   HFT_SCRAPE_TARGET            this placement's scrape target (host:port); default: any
#   HFT_SCRAPE_TIMEOUT           default 15
#   HFT_STRICT_CHECKS            1: exchange and Prometheus checks fail; default 0: they warn
# payload: lib.sh, validate_deployment.sh (staged by script_command with this script)
# stdin: not read.
set -euo pipefail
source "$HFT_PAYLOAD/lib.sh"

require_env HFT_HOME HFT_CONFIG HFT_UNIT_NAME HFT_API HFT_EXPECTED_SCHEMA_VERSION HFT_LOG_DIR \
  HFT_PROMETHEUS HFT_EXPECTED_VERSION
require_payload validate_deployment.sh
HFT_USER=${HFT_USER:-$(systemctl show -p User --value "$HFT_UNIT_NAME" 2>/dev/null || true)}
export HFT_USER
HFT_SCRAPE_TIMEOUT=${HFT_SCRAPE_TIMEOUT:-15}
HFT_SCRAPE_TARGET=${HFT_SCRAPE_TARGET:-}
HFT_STRICT_CHECKS=${HFT_STRICT_CHECKS:-0}
# tools the checks use (quiet: a validation run reports checks, not installs)
install_packages curl jq >/dev/null

# the installed copy: this deploy's values as defaults, then the checks
umask 022
rendered=$HFT_PAYLOAD/validate_deployment.rendered
{
  echo '#!/usr/bin/env bash'
  echo "# Managed by hft-deploy (runbook 11.1). Local edits are overwritten."
  echo "# This deploy's values; a variable set in the environment wins."
  for v in HFT_HOME HFT_CONFIG HFT_UNIT_NAME HFT_USER HFT_API HFT_EXPECTED_SCHEMA_VERSION \
      HFT_LOG_DIR HFT_PROMETHEUS HFT_EXPECTED_VERSION HFT_SCRAPE_TARGET HFT_SCRAPE_TIMEOUT HFT_STRICT_CHECKS; do
    printf '[ -n "${%s+x}" ] || %s=%q\n' "$v" "$v" "${!v}"
  done
  tail -n +2 "$HFT_PAYLOAD/validate_deployment.sh"
} >"$rendered"
bash -n "$rendered" || die "the rendered validate_deployment.sh does not parse"
ensure_dir "$HFT_HOME/scripts" 755 root:root >/dev/null
dest=$HFT_HOME/scripts/validate_deployment.sh
install_file "$rendered" "$dest" 755 root:root >/dev/null
no_symlink_in "$dest"
[ "$(stat -c '%u %a' "$dest")" = "0 755" ] || die "$dest is not root's 755"

# run it from where the runbook's operators run it
cd "$HFT_HOME"
exec "$dest"
