#!/usr/bin/env bash
# Print shell exports that make the pinned Pulumi toolchain work offline:
#   eval "$(make -s env)"
# - the toolchain's bin directory first on PATH (CLI, language host, providers);
# - no update check and no plugin download: a missing plugin fails at once with its name;
# - the local file backend in a directory outside the work tree;
# - passphrase secrets: no passphrase is exported here on purpose. `make lab` and the tests
#   use the documented lab-only default (tools/lab-passphrase.txt); for staging and prod
#   export PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE yourself.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${HFT_CACHE:-$HOME/.cache/hft-deploy}
bin=$("$here/build-toolchain.sh" --print-bin)
state=${HFT_STATE_DIR:-$cache/state}
repo=$(cd "$here/.." && pwd)
cat <<ENV
export PATH="$bin:$repo/venv/bin:\$PATH"
export PULUMI_HOME="$cache/pulumi-home"
export PULUMI_SKIP_UPDATE_CHECK=true
export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
export PULUMI_DIY_BACKEND_NO_LEGACY_WARNING=true
export PULUMI_BACKEND_URL="file://$state"
ENV
mkdir -p "$state" "$cache/pulumi-home"
