"""Find the Debian mirror this machine's apt already uses, instead of hardcoding a host.

The lab may only reach Debian's mirror, and whichever mirror (or snapshot) the machine is
configured for is the one known to be reachable; both one-line ``.list`` files and deb822
``.sources`` files are read. Files that apt itself ignores (other suffixes) are ignored too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from lab.errors import LabError


@dataclass(frozen=True)
class Mirrors:
    """The Debian archive URL for ``suite`` and, if configured, the security archive URL."""

    debian: str
    security: str | None

    def hosts(self) -> list[str]:
        urls = [self.debian] + ([self.security] if self.security else [])
        return sorted({urlparse(u).hostname or "" for u in urls} - {""})


def _entries(etc: Path) -> list[tuple[str, list[str]]]:
    """(URI, suites) for every enabled ``deb`` entry under ``etc``/apt."""
    out: list[tuple[str, list[str]]] = []
    files = [etc / "apt" / "sources.list"]
    d = etc / "apt" / "sources.list.d"
    if d.is_dir():
        files += sorted(d.iterdir())
    for f in files:
        if not f.is_file():
            continue
        text = f.read_text(errors="replace")
        if f.name.endswith(".list"):
            for line in text.splitlines():
                words = line.split("#", 1)[0].split()
                if len(words) >= 3 and words[0] == "deb":
                    rest = words[1:]
                    if rest[0].startswith("["):
                        while rest and not rest[0].endswith("]"):
                            rest = rest[1:]
                        rest = rest[1:]
                    if len(rest) >= 2:
                        out.append((rest[0], [rest[1]]))
        elif f.name.endswith(".sources"):
            for stanza in text.split("\n\n"):
                fields: dict[str, str] = {}
                for line in stanza.splitlines():
                    if line.startswith("#") or ":" not in line or line[:1].isspace():
                        continue
                    k, v = line.split(":", 1)
                    fields[k.strip().lower()] = v.strip()
                if "deb" in fields.get("types", "").split() and \
                        fields.get("enabled", "yes").lower() != "no":
                    for uri in fields.get("uris", "").split():
                        out.append((uri, fields.get("suites", "").split()))
    return out


def find(suite: str, etc: Path = Path("/etc")) -> Mirrors:
    """The mirrors serving ``suite`` and ``suite``-security in this machine's apt sources."""
    debian = security = None
    for uri, suites in _entries(etc):
        uri = uri.rstrip("/")
        if suite in suites and debian is None:
            debian = uri
        if f"{suite}-security" in suites and security is None:
            security = uri
    if debian is None:
        raise LabError("find Debian mirror",
                       f"no apt source for suite {suite!r} in {etc}/apt/sources.list(.d)",
                       f"add a `deb http://MIRROR/debian {suite} main` source to this machine")
    return Mirrors(debian=debian, security=security)
