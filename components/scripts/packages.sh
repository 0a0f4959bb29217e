#!/usr/bin/env bash
# Runbook 3.3 steps 1-2: build tools and libraries, and the gcc/g++ alternatives.
#
# env:
#   HFT_PACKAGES           space-separated Debian packages to install when missing
#   HFT_GCC_ALTERNATIVES   e.g. "12": gcc/g++ alternatives to gcc-12/g++-12 (priority 100); empty: skipped
# payload: lib.sh
# stdin: not read.
set -euo pipefail
source "$HFT_PAYLOAD/lib.sh"

# shellcheck disable=SC2086
install_packages ${HFT_PACKAGES:-}

v=${HFT_GCC_ALTERNATIVES:-}
if [ -z "$v" ]; then
  skipped "gcc alternatives (not configured)"
elif [ ! -x "/usr/bin/gcc-$v" ] || [ ! -x "/usr/bin/g++-$v" ]; then
  skipped "gcc alternatives (gcc-$v/g++-$v not installed)"
else
  for tool in gcc g++; do
    q=$(update-alternatives --query "$tool" 2>/dev/null || true)
    if grep -qx "Alternative: /usr/bin/$tool-$v" <<<"$q" && grep -qx "Value: /usr/bin/$tool-$v" <<<"$q"; then
      ok "$tool alternative -> $tool-$v"
    else
      update-alternatives --quiet --install "/usr/bin/$tool" "$tool" "/usr/bin/$tool-$v" 100 \
        || die "update-alternatives for $tool failed"
      update-alternatives --quiet --set "$tool" "/usr/bin/$tool-$v" || die "update-alternatives --set $tool failed"
      changed "$tool alternative -> $tool-$v (priority 100)"
    fi
  done
fi
