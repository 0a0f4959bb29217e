#!/usr/bin/env bash
# Print shell exports that make the pinned Pulumi toolchain work offline:
#   eval "$(make -s env)"
# - the toolchain's CLI directory first on PATH (the CLI and the language host); the two
#   providers are installed in PULUMI_HOME's plugin cache (`pulumi plugin install --file`,
#   refreshed here when the built ones changed), where Pulumi looks for them by version, so
#   no run warns "using pulumi-resource-... from $PATH";
# - no update check and no plugin download: a missing plugin fails at once with its name;
# - the state backend: BACKEND=<url> (`make env BACKEND=s3://bucket/hft-deploy`, or a
#   file:// directory on shared storage) for staging and prod, where operators share one
#   state with locking; without it the per-user file backend under ~/.cache/hft-deploy/state,
#   which the program refuses for staging and prod unless HFT_ALLOW_LOCAL_STATE=1 says the
#   operator knows (no lock shared with other operators; a lost laptop loses the state);
# - passphrase secrets: no passphrase is exported here on purpose. `make lab` and the tests
#   use the documented lab-only default (tools/lab-passphrase.txt); for staging and prod
#   export PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE yourself.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${HFT_CACHE:-$HOME/.cache/hft-deploy}
bin=$("$here/build-toolchain.sh" --print-bin)
state=${HFT_STATE_DIR:-$cache/state}
backend=${BACKEND:-${HFT_BACKEND_URL:-file://$state}}
repo=$(cd "$here/.." && pwd)
cat <<ENV
export PATH="$bin:$repo/venv/bin:\$PATH"
export PULUMI_HOME="$cache/pulumi-home"
export PULUMI_SKIP_UPDATE_CHECK=true
export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
export PULUMI_DIY_BACKEND_NO_LEGACY_WARNING=true
export PULUMI_BACKEND_URL="$backend"
export HFT_LOCAL_STATE_URL="file://$state"
ENV
mkdir -p "$state" "$cache/pulumi-home"
# a file:// backend must exist before Pulumi opens it ("unable to open state directory")
case $backend in file://*) mkdir -p "${backend#file://}" ;; esac
"$here/build-toolchain.sh" --install-plugins >&2
