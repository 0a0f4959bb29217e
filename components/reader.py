"""The one generic reader of stack configuration, and the grammar of every value it accepts.

Each component declares its config section as a small frozen dataclass beside it; every field
is a :func:`setting` naming its YAML key, the :class:`Rule` its value must follow (the grammar
of the file, unit, SQL or shell it reaches on a host), the runbook section and a one-line doc.
Defaults are not written here or in the dataclasses: they live only in ``config/runbook.yaml``,
which a stack's ``Pulumi.<stack>.yaml`` overrides key by key. :func:`read` turns one merged
mapping into its dataclass and records every problem as ``hft:KEY = VALUE: expected ALLOWED``,
so ``pulumi preview`` lists them all at once, before any remote command is registered.

The key reference (``docs/config-reference.md``) is generated from these same declarations.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent


class ConfigError(Exception):
    """Every problem in a stack's configuration, one per line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid stack configuration:\n  - " + "\n  - ".join(problems))


def shown(value: Any) -> str:
    return json.dumps(value, default=str)


@dataclass(frozen=True)
class Rule:
    """What one value may be: ``allowed`` is the text an error shows, ``check`` decides.

    ``check`` returns True, False, or a string saying more precisely what is wrong (it is
    then shown instead of ``allowed``). ``convert`` turns an accepted value into its typed form.
    """

    allowed: str
    check: Callable[[Any], bool | str]
    convert: Callable[[Any], Any] = lambda v: v

    def read(self, value: Any, where: str, problems: list[str]) -> Any:
        verdict = self.check(value)
        if verdict is True:
            return self.convert(value)
        why = verdict if isinstance(verdict, str) else self.allowed
        problems.append(f"hft:{where} = {shown(value)}: expected {why}")
        return None

    def __or__(self, other: "Rule") -> "Rule":
        """Either rule (e.g. a number or ``unlimited``)."""
        return Rule(f"{self.allowed}, or {other.allowed}",
                    lambda v: self.check(v) is True or other.check(v) is True,
                    lambda v: self.convert(v) if self.check(v) is True else other.convert(v))

    def where(self, extra: Callable[[Any], bool | str], allowed: str | None = None) -> "Rule":
        """This rule, and then ``extra`` on the converted value."""
        def check(v: Any) -> bool | str:
            first = self.check(v)
            return extra(self.convert(v)) if first is True else first
        return Rule(allowed or self.allowed, check, self.convert)


def setting(key: str, rule: Any, doc: str, runbook: str = "", optional: bool = False,
            lab: str = "") -> Any:
    """One config key of a section dataclass (see the module docstring)."""
    return field(metadata={"key": key, "rule": rule, "doc": doc, "runbook": runbook,
                           "optional": optional, "lab": lab})


class Section:
    """A nested section: the dataclass ``cls`` read from a mapping."""

    def __init__(self, cls: type):
        self.cls = cls
        self.allowed = f"an object ({cls.__name__})"

    def read(self, value: Any, where: str, problems: list[str]) -> Any:
        return read(self.cls, value, where, problems)


class ListOf:
    """A list whose items each follow ``item`` (a Rule or a Section)."""

    def __init__(self, item: Any, min_items: int = 0, unique: bool = False):
        self.item, self.min_items, self.unique = item, min_items, unique
        self.allowed = f"a list of {item.allowed}" + (f" (at least {min_items})" if min_items else "")

    def read(self, value: Any, where: str, problems: list[str]) -> Any:
        if not isinstance(value, list) or len(value) < self.min_items:
            problems.append(f"hft:{where} = {shown(value)}: expected {self.allowed}")
            return ()
        items = tuple(self.item.read(v, f"{where}[{i}]", problems) for i, v in enumerate(value))
        if self.unique and len(set(value)) != len(value) and all(isinstance(v, str) for v in value):
            dups = sorted({v for v in value if value.count(v) > 1})
            problems.append(f"hft:{where} = {shown(value)}: expected no duplicates (repeated: {', '.join(dups)})")
        return items


class MapOf:
    """A mapping whose keys follow ``key`` and values follow ``value`` (Rules or Sections)."""

    def __init__(self, key: Rule, value: Any):
        self.key, self.value = key, value
        self.allowed = f"an object of {key.allowed} -> {value.allowed}"

    def read(self, value: Any, where: str, problems: list[str]) -> Any:
        if not isinstance(value, dict):
            problems.append(f"hft:{where} = {shown(value)}: expected {self.allowed}")
            return {}
        out = {}
        for k, v in value.items():
            if self.key.read(k, f"{where} key", problems) is None:
                continue
            item = self.read_item(k, v, f"{where}.{k}", problems)
            if item is not SKIP:
                out[k] = item
        return out

    def read_item(self, key: Any, value: Any, where: str, problems: list[str]) -> Any:
        """One value (a subclass may check it against its key; return ``SKIP`` to drop it)."""
        return self.value.read(value, where, problems)


SKIP = object()


def read(cls: type, raw: Any, path: str, problems: list[str]) -> Any:
    """The dataclass ``cls`` from the mapping ``raw`` (at config path ``path``)."""
    if not isinstance(raw, dict):
        problems.append(f"hft:{path} = {shown(raw)}: expected an object (mapping)")
        raw = {}
    values: dict[str, Any] = {}
    before = len(problems)
    keys = []
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if "key" not in meta:
            continue
        key, rule = meta["key"], meta["rule"]
        keys.append(key)
        where = f"{path}.{key}" if path else key
        if raw.get(key) is None:
            values[f.name] = None
            if not meta["optional"]:
                problems.append(f"hft:{where} is missing: expected {rule.allowed}")
            continue
        values[f.name] = rule.read(raw[key], where, problems)
    for key in sorted(set(raw) - set(keys)):
        where = f"{path}.{key}" if path else key
        problems.append(f"hft:{where}: unknown key (allowed here: {', '.join(sorted(keys))})")
    try:
        obj = cls(**values)
    except TypeError as err:  # a dataclass field without setting(): a programming error
        raise TypeError(f"{cls.__name__}: {err}") from None
    check = getattr(obj, "check", None)
    if check is not None and len(problems) == before:  # rules across keys, once each key is sound
        problems.extend(check(path))
    return obj


def deep_merge(base: Any, override: Any) -> Any:
    """Objects merge key by key; anything else in ``override`` replaces ``base``."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = deep_merge(base.get(key), value) if key in base else value
        return merged
    return override


# ---- the grammar: what the files, units, SQL and shell on a host accept -------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def text(max_len: int = 200, allowed: str = "") -> Rule:
    """One line of text (no newline or control character), e.g. a unit's Description=."""
    return Rule(allowed or f"one line of text (no newline or control characters, at most {max_len} characters)",
                lambda v: _is_str(v) and bool(v.strip()) and not _CONTROL.search(v) and len(v) <= max_len)


def pattern(regex: str, allowed: str) -> Rule:
    """A string matching ``regex`` in full (``fullmatch``: a trailing newline does not pass)."""
    compiled = re.compile(regex)
    return Rule(f"{allowed} (matching {regex})", lambda v: _is_str(v) and compiled.fullmatch(v) is not None)


def choice(*options: str) -> Rule:
    return Rule("one of " + ", ".join(options), lambda v: _is_str(v) and v in options)


def integer(lo: int, hi: int) -> Rule:
    return Rule(f"an integer from {lo} to {hi}",
                lambda v: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi)


BOOL = Rule("true or false", lambda v: isinstance(v, bool))
HOSTNAME = pattern(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", "a host name")
IDENT = pattern(r"[a-z_][a-z0-9_]{0,62}", "a lower-case identifier (user, role, database)")
TAG = pattern(r"v\d+\.\d+\.\d+(-[0-9A-Za-z.]+)?", "a release tag like v1.2.3")
PACKAGE = pattern(r"[a-z0-9][a-z0-9+.-]+", "a Debian package name")
DURATION = pattern(r"\d+(ms|s|m)", "a Prometheus duration like 1s")
OCTAL_MODE = pattern(r"0?[0-7]{3}", "an octal file mode like 755")
UNIT_NAME = pattern(r"[A-Za-z0-9][A-Za-z0-9:_.@-]*(\.(service|target|socket|timer|mount|path))?",
                    "a systemd unit name")
SYSCTL_KEY = pattern(r"[a-z0-9_]+(\.[a-zA-Z0-9_-]+)+", "a sysctl key")
SYSCTL_VALUE = Rule("a sysctl value: integers separated by single spaces (e.g. \"4096 87380 67108864\")",
                    lambda v: (isinstance(v, int) and not isinstance(v, bool))
                    or (_is_str(v) and re.fullmatch(r"-?\d+( -?\d+)*", v) is not None),
                    str)
LIMIT_VALUE = pattern(r"\d+|unlimited|infinity", "a number, unlimited or infinity")
GIT_URL = pattern(r"((https|git)://|ssh://([a-z][a-z0-9_-]*@)?)[A-Za-z0-9.-]+(:\d+)?(/[A-Za-z0-9._~%+-]+)+/?|"
                  r"[a-z][a-z0-9_-]*@[A-Za-z0-9.-]+:[A-Za-z0-9._~/+-]+",
                  "a git URL without credentials (https://, git://, ssh:// or user@host:path)")
PG_SETTING_NAME = pattern(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)?", "a postgresql.conf parameter name")
PG_SETTING_VALUE = Rule("a postgresql.conf value: a number, or text without quotes, backslashes or newlines",
                        lambda v: (isinstance(v, (int, float)) and not isinstance(v, bool))
                        or (_is_str(v) and not _CONTROL.search(v) and "'" not in v and "\\" not in v
                            and len(v) <= 200),
                        str)
ENV_NAME = pattern(r"[A-Z][A-Z0-9_]*", "an environment variable name")

# The OS families hft-deploy knows (ID= of /etc/os-release): the runbook's Ubuntu 22.04 and the
# lab's Debian 12. A per-family value is chosen on the host, by the family its preflight detects.
OS_FAMILIES = ("debian", "ubuntu")
OS_FAMILY = choice(*OS_FAMILIES)


def per_family(value: Any) -> "MapOf":
    """One value per OS family (``{debian: ..., ubuntu: ...}``), chosen on the host."""
    return MapOf(OS_FAMILY, value)


def _ip(v: Any) -> bool:
    try:
        ipaddress.ip_address(v)
        return _is_str(v)
    except ValueError:
        return False


IP = Rule("an IPv4/IPv6 address", _ip)


def _cidr(v: Any) -> bool:
    try:
        ipaddress.ip_network(v, strict=True)
        return _is_str(v) and "/" in v
    except ValueError:
        return False


CIDR = Rule("an address range like 10.0.0.5/32 (host bits zero)", _cidr)


def abs_path(*prefixes: str) -> Rule:
    """An absolute, normalised path at or below one of ``prefixes``; a prefix written with a
    trailing ``/`` (``/opt/``) admits only paths strictly below it, never the system directory itself."""
    allowed = ("an absolute path " + " or ".join(("below " + p.rstrip("/")) if p.endswith("/") else ("at or below " + p)
                                                 for p in prefixes)
               + " (no .., //, spaces or shell characters)")

    def ok(v: Any) -> bool:
        if not _is_str(v) or not re.fullmatch(r"(/[A-Za-z0-9._-]+)+", v) or "/../" in v + "/" or "/./" in v + "/":
            return False
        return any(v.startswith(p) and len(v) > len(p) if p.endswith("/") else (v == p or v.startswith(p + "/"))
                   for p in prefixes)
    return Rule(allowed, ok)

