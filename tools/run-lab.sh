#!/usr/bin/env bash
# README command 1's main job: boot the lab hosts (blue, green), serve the releases, and `pulumi up` the
# lab stack, ending with the validation report. Called by `make lab` once deps, venv and
# tools are in place.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
python3 -m lab up hft-prod-01 hft-prod-02
tools/serve-releases.sh start
eval "$(tools/env.sh)"
# The lab-only passphrase (documented in the README); never used for staging or prod.
export PULUMI_CONFIG_PASSPHRASE_FILE="$PWD/tools/lab-passphrase.txt"
unset PULUMI_CONFIG_PASSPHRASE
pulumi stack select lab --create --secrets-provider passphrase --non-interactive
pulumi up --stack lab --yes --non-interactive --diff=false "$@"
echo
echo "== validation report (runbook 11.1) =="
pulumi stack output --stack lab validation --json
pulumi stack output --stack lab colors --json
echo "lab: done in $(( $(date +%s) - t0 ))s. Inspect with: python3 -m lab ssh hft-prod-01 systemctl status hft_system"
