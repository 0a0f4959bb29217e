#!/usr/bin/env bash
# Find or build the pinned Pulumi toolchain: the CLI from its upstream source through the Go
# module proxy (no prebuilt Pulumi binary can be downloaded on these machines), the Python
# language host and the command and random providers from tools/plugins.
#
# Everything lands in a cache outside the work tree, keyed by tools/versions.env:
#   ${HFT_CACHE:-$HOME/.cache/hft-deploy}/tools/<key>/bin
# with the Go module and build caches beside it, so a second run takes seconds.
#
# The two providers are installed the way Pulumi expects, into the plugin cache of
# PULUMI_HOME (<cache>/pulumi-home, which tools/env.sh exports) with
# `pulumi plugin install resource NAME VERSION --file`, and only the CLI and the language host
# go on PATH (<key>/cli): a provider found on PATH is an "ambient" plugin, used without a
# version check and announced by a "using pulumi-resource-... from $PATH" warning on every run.
#
# Usage: tools/build-toolchain.sh [--print-bin | --install-plugins] [PART...]
#   PART: pulumi plugins (default: both)
#   --print-bin: print the directory that goes on PATH and exit (builds nothing)
#   --install-plugins: install the built providers into PULUMI_HOME's plugin cache where the
#     copy there is missing or differs (quiet; tools/env.sh runs it)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

cache=${HFT_CACHE:-$HOME/.cache/hft-deploy}
key=$(sha256sum "$here/versions.env" | cut -c1-12)
prefix="$cache/tools/$key"
bin="$prefix/bin"
cli="$prefix/cli"
src="$prefix/src"
# The PULUMI_HOME tools/env.sh exports (its plugin cache is where the providers go).
pulumi_home="$cache/pulumi-home"
# What goes on PATH: the CLI, the language host and the scripts it runs (not the providers).
CLI_TOOLS=(pulumi pulumi-language-python pulumi-language-python-exec pulumi-resource-pulumi-python)

die() { printf 'build-toolchain: %s\n' "$*" >&2; exit 1; }

# existing_toolchain: the directory of a pulumi already on PATH (outside our cache) that is
# at least the pinned version and has the language host and both providers beside it on PATH.
existing_toolchain() {
  local found; found=$(command -v pulumi 2>/dev/null) || return 1
  case "$found" in "$cache"/*) return 1 ;; esac
  local have; have=$("$found" version 2>/dev/null) || return 1
  [ "$(printf '%s\n%s\n' "${PULUMI_VERSION#v}" "${have#v}" | sort -V | head -1)" = "${PULUMI_VERSION#v}" ] || return 1
  local tool
  for tool in pulumi-language-python pulumi-language-python-exec pulumi-resource-command pulumi-resource-random; do
    command -v "$tool" >/dev/null 2>&1 || return 1
  done
  dirname "$found"
}

# cli_dir: links to the CLI tools of $bin in $cli (no providers there).
cli_dir() {
  local t
  mkdir -p "$cli"
  for t in "${CLI_TOOLS[@]}"; do
    [ -x "$bin/$t" ] || continue
    [ "$(readlink "$cli/$t" 2>/dev/null)" = "$bin/$t" ] || ln -sfn "$bin/$t" "$cli/$t"
  done
}

# install_providers: each provider of $bin into PULUMI_HOME's plugin cache, unless the copy
# there is already the same file. Output only on failure (env.sh's stdout is eval'ed).
install_providers() {
  local name version dest log stamp built
  # The build's stamp (a digest of tools/plugins' source) recorded beside the installed copies:
  # when it matches, nothing to compare (env.sh runs this on every call).
  built=$(cd "$bin" && ls -d .plugins.* 2>/dev/null | head -1)
  stamp="$pulumi_home/plugins/.hft-deploy-$key"
  if [ -n "$built" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$built" ] \
     && [ -x "$pulumi_home/plugins/resource-command-v$COMMAND_PROVIDER_VERSION/pulumi-resource-command" ] \
     && [ -x "$pulumi_home/plugins/resource-random-v$RANDOM_PROVIDER_VERSION/pulumi-resource-random" ]; then
    return 0
  fi
  for name in command random; do
    case $name in command) version=$COMMAND_PROVIDER_VERSION ;; random) version=$RANDOM_PROVIDER_VERSION ;; esac
    [ -x "$bin/pulumi-resource-$name" ] || continue
    dest="$pulumi_home/plugins/resource-$name-v$version/pulumi-resource-$name"
    cmp -s "$bin/pulumi-resource-$name" "$dest" && continue
    log=$(PULUMI_HOME="$pulumi_home" PULUMI_SKIP_UPDATE_CHECK=true "$bin/pulumi" plugin install resource "$name" \
          "$version" --file "$bin/pulumi-resource-$name" --reinstall --non-interactive 2>&1) \
      || { printf '%s\n' "$log" >&2; die "could not install pulumi-resource-$name $version into $pulumi_home"; }
  done
  [ -z "$built" ] || printf '%s\n' "$built" >"$stamp"
}

if [ "${1:-}" = "--print-bin" ]; then
  existing_toolchain || echo "$cli"
  exit 0
fi
if [ "${1:-}" = "--install-plugins" ]; then
  if ! existing_toolchain >/dev/null && [ -x "$bin/pulumi" ]; then
    mkdir -p "$pulumi_home"
    cli_dir
    install_providers
  fi
  exit 0
fi
if [ "${HFT_BUILD_TOOLCHAIN:-}" != "1" ] && dir=$(existing_toolchain); then
  echo "toolchain: using pulumi $(pulumi version) and its plugins from $dir (set HFT_BUILD_TOOLCHAIN=1 to build the pinned one instead)"
  exit 0
fi

export GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build"
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0 GOPROXY=${GOPROXY:-https://proxy.golang.org}
export GONOSUMDB= GOPRIVATE=

step_started=0
step() { step_started=$(date +%s); printf '==> %s\n' "$*"; }
done_step() { printf '    done in %ss\n' "$(( $(date +%s) - step_started ))"; }

check_prerequisites() {
  command -v go >/dev/null || die "Go is not installed; install Go >= 1.26 (Debian: golang-1.26 or the Go toolchain) and rerun."
  local gov; gov=$(go env GOVERSION | sed 's/^go//')
  local major=${gov%%.*} rest=${gov#*.}; local minor=${rest%%.*}
  if [ "$major" -lt 1 ] || { [ "$major" -eq 1 ] && [ "$minor" -lt 26 ]; }; then
    die "Go $gov is too old: Pulumi ${PULUMI_VERSION} needs Go >= 1.26.6. Install a newer Go (or export GOTOOLCHAIN=go1.27.3 to let go fetch one from the module proxy)."
  fi
  mkdir -p "$cache"
  local free_kb; free_kb=$(df -Pk "$cache" | awk 'NR==2 {print $4}')
  [ "$free_kb" -ge $((6 * 1024 * 1024)) ] || die "only $((free_kb / 1024)) MiB free under $cache; the toolchain build needs about 6 GiB (Go module and build caches). Free some disk or set HFT_CACHE to a larger disk."
  command -v git >/dev/null || die "git is missing (apt-get install git)"
}

# wrapper_module DIR: an empty Go module in DIR that only exists to build a main package of
# a dependency with pinned versions (go install refuses modules whose go.mod has replaces).
wrapper_module() {
  rm -rf "$1"; mkdir -p "$1"
  (cd "$1" && go mod init hft-deploy.local/toolchain >/dev/null 2>&1)
}

# copy_replaces GOMOD: apply to the current module every replace of GOMOD that points at
# another module version (local-path replaces are satisfied by requiring the same version).
copy_replaces() {
  go mod edit -json "$1" | python3 -c '
import json, sys
for r in json.load(sys.stdin).get("Replace") or []:
    new = r["New"]
    if not new.get("Version"):
        continue
    old = r["Old"]["Path"] + ("@" + r["Old"]["Version"] if r["Old"].get("Version") else "")
    print("-replace=%s=%s@%s" % (old, new["Path"], new["Version"]))
' | xargs -r go mod edit
}

gomod_of() { go mod download -json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])'; }
dir_of() { go mod download -json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'; }

build_pulumi() {
  [ -x "$bin/pulumi" ] && return 0
  step "pulumi CLI ${PULUMI_VERSION} (large download and build: 10-25 min cold on 2 cores)"
  local w="$src/pulumi"; wrapper_module "$w"; cd "$w"
  copy_replaces "$(gomod_of "github.com/pulumi/pulumi/pkg/v3@${PULUMI_VERSION}")"
  go get "github.com/pulumi/pulumi/pkg/v3@${PULUMI_VERSION}" "github.com/pulumi/pulumi/sdk/v3@${PULUMI_VERSION}" \
    "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi@${PULUMI_VERSION}"
  go build -trimpath -tags osusergo,grpcnotrace \
    -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=${PULUMI_VERSION}" \
    -o "$bin/pulumi.tmp" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
  mv "$bin/pulumi.tmp" "$bin/pulumi"
  done_step
}

# The language host and the two providers come from tools/plugins (our source): rebuilt
# when that source changes, which the Go build cache makes quick.
build_plugins() {
  local plugins="$here/plugins"
  local digest; digest=$(cd "$plugins" && find . -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) -print0 \
    | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
  local stamp="$bin/.plugins.$digest"
  if [ -f "$stamp" ] && [ -x "$bin/pulumi-language-python" ] && [ -x "$bin/pulumi-resource-command" ] \
     && [ -x "$bin/pulumi-resource-random" ]; then
    return 0
  fi
  step "pulumi-language-python, pulumi-resource-command ${COMMAND_PROVIDER_VERSION}, pulumi-resource-random ${RANDOM_PROVIDER_VERSION} (tools/plugins)"
  (cd "$plugins" && go build -trimpath -ldflags "-s -w -X main.version=${PULUMI_VERSION#v}" \
      -o "$bin/pulumi-language-python" ./cmd/pulumi-language-python)
  "$here/build-plugins.sh" "$bin"
  # The two scripts the language host runs live in the upstream sdk module.
  local sdk; sdk=$(dir_of "github.com/pulumi/pulumi/sdk/v3@${PULUMI_VERSION}")
  install -m 755 "$sdk/python/cmd/pulumi-language-python-exec" "$bin/pulumi-language-python-exec"
  install -m 755 "$sdk/python/dist/pulumi-resource-pulumi-python" "$bin/pulumi-resource-pulumi-python"
  rm -f "$bin"/.plugins.*; touch "$stamp"
  done_step
}

main() {
  local parts=("$@")
  [ ${#parts[@]} -gt 0 ] || parts=(pulumi plugins)
  local t0; t0=$(date +%s)
  check_prerequisites
  mkdir -p "$bin" "$src"
  for part in "${parts[@]}"; do
    case "$part" in
      pulumi) build_pulumi ;;
      plugins) build_plugins ;;
      *) die "unknown part '$part' (pulumi, plugins)" ;;
    esac
  done
  cli_dir
  mkdir -p "$pulumi_home"
  install_providers
  printf 'toolchain ready in %s (%ss); providers installed in %s/plugins\n' "$cli" "$(( $(date +%s) - t0 ))" "$pulumi_home"
}

main "$@"
