#!/usr/bin/env bash
# Publish the reference workload as a bare git repository with the tags v1.0.0 and v1.1.0,
# which the deployment clones, checks out, builds and installs (runbook 3.5, 4.1).
#
#   workload/publish-repo.sh DEST
#
# The repository root is workload/hft_system (CMakeLists.txt at the top). Both releases are
# the current source; they differ only in release.cmake: v1.0.0 reports 1.0.0 and does not
# write strategy_metrics, v1.1.0 reports 1.1.0 and does. Authors, committers and dates are
# fixed, so the commit hashes depend on the source alone. Idempotent: when DEST already
# holds exactly these refs it is left untouched; otherwise it is replaced as a whole.
# DEST must be absent or a bare git repository (anything else is refused, never deleted).
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 DEST" >&2
  exit 2
fi
dest=$1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src="$here/hft_system"
[ -f "$src/CMakeLists.txt" ] && [ -f "$src/release.cmake" ] || {
  echo "publish-repo: $src is not the hft_system source" >&2
  exit 1
}
if [ -e "$dest" ] && ! git --git-dir="$dest" rev-parse --is-bare-repository >/dev/null 2>&1; then
  echo "publish-repo: $dest exists and is not a bare git repository; refusing to replace it" >&2
  exit 1
fi

# A fixed identity and no user or system configuration: the same source gives the same hashes.
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
export GIT_AUTHOR_NAME="hft-deploy release" GIT_AUTHOR_EMAIL="release@hft-deploy.invalid"
export GIT_COMMITTER_NAME="hft-deploy release" GIT_COMMITTER_EMAIL="release@hft-deploy.invalid"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
repo="$tmp/repo.git"
tree="$tmp/tree"
mkdir -p "$tree"
git init -q --bare --initial-branch=main "$repo"

# The files to publish: what git tracks or would track (ignored files such as build/ and
# config/production.json stay out); outside a git checkout, every file but build/.
if git -C "$src" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  (cd "$src" && git ls-files -z --cached --others --exclude-standard -- .) >"$tmp/files"
else
  (cd "$src" && find . -path ./build -prune -o -type f -print0) >"$tmp/files"
fi
while IFS= read -r -d '' f; do
  [ -f "$src/$f" ] || continue  # tracked but deleted in the work tree
  mkdir -p "$tree/$(dirname "$f")"
  cp -p "$src/$f" "$tree/$f"
done <"$tmp/files"

# release VERSION METRICS(ON|OFF) EPOCH [PARENT] -> prints the commit; tags it vVERSION.
release() {
  local version=$1 metrics=$2 epoch=$3 parent=${4:-} broken=${5:-OFF}
  sed -e "s/^set(HFT_VERSION .*/set(HFT_VERSION \"$version\")/" \
      -e "s/^set(HFT_WRITE_STRATEGY_METRICS_DEFAULT .*/set(HFT_WRITE_STRATEGY_METRICS_DEFAULT $metrics)/" \
      -e "s/^set(HFT_NEVER_HEALTHY_DEFAULT .*/set(HFT_NEVER_HEALTHY_DEFAULT $broken)/" \
      "$src/release.cmake" >"$tree/release.cmake"
  grep -q "^set(HFT_VERSION \"$version\")" "$tree/release.cmake"
  grep -q "^set(HFT_WRITE_STRATEGY_METRICS_DEFAULT $metrics)" "$tree/release.cmake"
  grep -q "^set(HFT_NEVER_HEALTHY_DEFAULT $broken)" "$tree/release.cmake"
  export GIT_AUTHOR_DATE="$epoch +0000" GIT_COMMITTER_DATE="$epoch +0000"
  git --git-dir="$repo" --work-tree="$tree" add -A
  local t c
  t=$(git --git-dir="$repo" write-tree)
  if [ -n "$parent" ]; then
    c=$(git --git-dir="$repo" commit-tree "$t" -p "$parent" -m "hft_system $version")
  else
    c=$(git --git-dir="$repo" commit-tree "$t" -m "hft_system $version")
  fi
  git --git-dir="$repo" tag -a "v$version" -m "hft_system $version" "$c"
  echo "$c"
}

c100=$(release 1.0.0 OFF 1763632800)        # 2025-11-20T10:00:00Z
c110=$(release 1.1.0 ON 1764064800 "$c100")  # 2025-11-25T10:00:00Z
# v1.1.1: builds and starts, never healthy (the lab's failed release); main stays on v1.1.0
release 1.1.1 ON 1764151200 "$c110" ON >/dev/null  # 2025-11-26T10:00:00Z
git --git-dir="$repo" update-ref refs/heads/main "$c110"
git --git-dir="$repo" update-server-info

new_refs=$(git --git-dir="$repo" show-ref)
if [ -d "$dest" ] && [ "$(git --git-dir="$dest" show-ref 2>/dev/null || true)" = "$new_refs" ]; then
  echo "publish-repo: $dest unchanged (v1.0.0 $c100, v1.1.0 $c110)"
  exit 0
fi
rm -rf "$dest.publishing"
mkdir -p "$(dirname "$dest")"
mv "$repo" "$dest.publishing"
rm -rf "$dest"
mv "$dest.publishing" "$dest"
echo "publish-repo: published $dest (v1.0.0 $c100, v1.1.0 $c110)"
