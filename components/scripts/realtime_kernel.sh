#!/usr/bin/env bash
# Runbook 3.2 step 2: real-time kernel, installed. Real servers only (a container shares its
# host's kernel). When `uname -r` does not match HFT_RT_PATTERN, installs the RT kernel
# packages and checks that a kernel matching HFT_RT_PATTERN is now in /boot. It does not
# reboot: realtime_kernel_reboot.sh does, as a step of its own (so `pulumi preview` names it).
#
# Each env value is given either as one value or per OS family (HFT_RT_PACKAGES_DEBIAN,
# HFT_RT_PACKAGES_UBUNTU, ...), chosen on the host by its /etc/os-release (lib.sh by_family).
# env:
#   HFT_RT_PACKAGES   e.g. "linux-image-rt-amd64 linux-headers-rt-amd64"
#   HFT_RT_PATTERN    extended regex matched against `uname -r`, e.g. "-rt"
# payload: lib.sh
# stdin: not read.
set -euo pipefail
source "$HFT_PAYLOAD/lib.sh"

HFT_RT_PACKAGES=$(by_family HFT_RT_PACKAGES)
HFT_RT_PATTERN=$(by_family HFT_RT_PATTERN)
release=$(uname -r)
if grep -Eq -- "$HFT_RT_PATTERN" <<<"$release"; then
  ok "running RT kernel $release"
  exit 0
fi
# shellcheck disable=SC2086
install_packages $HFT_RT_PACKAGES
newest=$(for f in /boot/vmlinuz-*; do [ -e "$f" ] && printf '%s\n' "${f#/boot/vmlinuz-}"; done \
  | grep -E -- "$HFT_RT_PATTERN" | sort -V | tail -n 1 || true)
[ -n "$newest" ] || die "installed $HFT_RT_PACKAGES but no kernel in /boot matches $HFT_RT_PATTERN \
(check hft:realtimeKernel.packages and hft:realtimeKernel.unamePattern)"
ok "RT kernel $newest installed (running $release)"
