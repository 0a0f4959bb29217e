"""Give each container its own cgroup, so that their systemd instances do not share one.

This machine has no systemd as PID 1, so ``systemd-nspawn --keep-unit`` stays in the cgroup
it was started in and creates ``payload``/``supervisor`` below it. Started from the root
cgroup, every container would get the *same* ``/payload`` tree: one container's systemd would
then create, populate and remove another's ``system.slice/ssh.service`` (seen here as units
failing with 219/CGROUP when several hosts boot at once). Each nspawn is therefore moved into
``/hftlab/HOST`` of the name=systemd and cgroup2 hierarchies before it execs.
"""

from __future__ import annotations

from pathlib import Path

CGROUP_FS = Path("/sys/fs/cgroup")


def hierarchies() -> list[Path]:
    """Mount points of the hierarchies systemd tracks processes in (v2, or v1 name=systemd)."""
    if (CGROUP_FS / "cgroup.controllers").exists():
        return [CGROUP_FS]  # unified (pure cgroup v2)
    return [d for d in (CGROUP_FS / "systemd", CGROUP_FS / "unified") if d.is_dir()]


def host_groups(name: str) -> list[Path]:
    return [h / "hftlab" / name for h in hierarchies()]


def wrap(name: str, argv: list[str]) -> list[str]:
    """``argv`` prefixed by a shell that joins the host's cgroups and then execs it."""
    groups = host_groups(name)
    for g in groups:
        g.mkdir(parents=True, exist_ok=True)
    joins = " && ".join(f'echo $$ > "${i + 1}/cgroup.procs"' for i in range(len(groups)))
    script = f"{joins} && shift {len(groups)} && exec \"$@\"" if groups else 'exec "$@"'
    return ["sh", "-c", script, "hftlab-cgroup", *map(str, groups), *argv]


def remove(name: str) -> list[str]:
    """Remove the host's (now empty) cgroups bottom-up; return those that could not go."""
    left: list[str] = []
    for g in host_groups(name):
        if not g.is_dir():
            continue
        for d in sorted((p for p in g.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            try:
                d.rmdir()
            except OSError:
                pass
        try:
            g.rmdir()
        except OSError:
            left.append(str(g))
    for h in hierarchies():
        try:
            (h / "hftlab").rmdir()  # only succeeds once no host of any lab home is left
        except OSError:
            pass
    return left
