#!/usr/bin/env bash
# Runbook 3.2 step 2, between the reboot and "Verify after reboot". Runs on the deployer's
# machine (a local command, its text on stdin), not on the host: when HFT_REBOOT is 1, waits
# for the host's SSH port to stop answering (the reboot), then to answer again with an SSH
# banner, at most HFT_WAIT_SECONDS in all; a host that is not back by then fails the update
# with what to check. No credentials: it only reads the banner sshd sends before any login.
#
# env:
#   HFT_HOST_NAME     the host's name in the stack (required)
#   HFT_ADDRESS       its address (required)
#   HFT_PORT          its SSH port (required)
#   HFT_WAIT_SECONDS  how long to wait in all (required)
#   HFT_REBOOT        1: the reboot step scheduled a reboot; 0: nothing to wait for (required)
#   HFT_RT_KERNEL     the kernel it reboots into, for messages
# stdin: this script (it is run as `bash -s`).
set -euo pipefail

require_env() {
  local n
  for n in "$@"; do
    [ -n "${!n:-}" ] || { printf 'error: environment variable %s is required\n' "$n" >&2; exit 1; }
  done
}
require_env HFT_HOST_NAME HFT_ADDRESS HFT_PORT HFT_WAIT_SECONDS HFT_REBOOT
host=$HFT_HOST_NAME
if [ "$HFT_REBOOT" != 1 ]; then
  echo "ok: $host was not rebooted: nothing to wait for"
  exit 0
fi
wait=$HFT_WAIT_SECONDS
start=$SECONDS
# answers: sshd on ADDRESS:PORT sends its banner within 5 s.
answers() {
  timeout 6 bash -c 'exec 3<>"/dev/tcp/$1/$2" && IFS= read -r -t 5 line <&3 && [[ $line == SSH-* ]]' \
    _ "$HFT_ADDRESS" "$HFT_PORT" 2>/dev/null
}
# The reboot starts 5 s after the reboot step returned, and sshd answers until late in the
# shutdown (56 s on the lab VM under TCG). A host still answering after half the wait (at
# least 60 s) did not go down, or went down and came back before this started (an `up` run
# again after a failed wait): go on, the verify step checks the kernel that runs.
half=$((wait / 2 > 60 ? wait / 2 : 60))
down=0
while [ $((SECONDS - start)) -lt "$half" ] && [ $((SECONDS - start)) -lt "$wait" ]; do
  if ! answers; then down=1; break; fi
  sleep 1
done
if [ "$down" = 1 ]; then
  echo "ok: $host went down for the RT-kernel reboot after $((SECONDS - start)) s"
else
  echo "warning: $host kept answering on $HFT_ADDRESS:$HFT_PORT for $((SECONDS - start)) s after the reboot was scheduled"
fi
while [ $((SECONDS - start)) -lt "$wait" ]; do
  if answers; then
    echo "ok: $host answers SSH again $((SECONDS - start)) s after the reboot${HFT_RT_KERNEL:+ into $HFT_RT_KERNEL}"
    exit 0
  fi
  sleep 2
done
printf 'error: %s did not come back from the RT-kernel reboot after %s s (no SSH banner on %s:%s). Check: %s; %s; %s. If it is only slow to boot, raise hft:realtimeKernel.rebootWaitSeconds and run `pulumi up` again.\n' \
  "$host" "$wait" "$HFT_ADDRESS" "$HFT_PORT" \
  "its console (did it reach the boot loader, a kernel panic, a fsck or network wait?)" \
  "the GRUB default entry (does it boot ${HFT_RT_KERNEL:-the RT kernel}, or an older kernel without the network?)" \
  "the kernel package (hft:realtimeKernel.packages: is the installed image complete, with its initrd in /boot?)" >&2
exit 1
