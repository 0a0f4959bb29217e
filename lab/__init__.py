"""The lab: a local fleet of real Debian 12 servers for hft-deploy's lab stack and tests.

hft-deploy configures servers over SSH; to run and test it on one machine it needs hosts that
boot real systemd and sshd, each with its own address and filesystem. Each lab host is a
``systemd-nspawn -b`` container on a copy-on-write overlay of one cached debootstrapped image,
attached to the bridge ``hftlab0`` (198.18.0.0/24). Run ``python3 -m lab --help`` as root.
"""
