#!/usr/bin/env bash
# Runbook 3.2 step 2: real-time kernel. Real servers only (a container shares its host's kernel).
# When `uname -r` does not match HFT_RT_PATTERN, installs the RT kernel packages and schedules a
# reboot in 5 s; the component then waits for SSH and runs realtime_kernel_verify.sh.
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
if command -v systemd-run >/dev/null && systemd-run --quiet --on-active=5 systemctl reboot; then
  :
else
  nohup sh -c 'sleep 5; shutdown -r now' >/dev/null 2>&1 &
fi
changed "rebooting into RT kernel (running $release)"
