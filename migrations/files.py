"""Migration files on disk: discovery, checksums, header directives, statement splitting.

Why a module of its own: everything here is pure (no database), so the checks that must
happen *before anything is applied* (duplicates, gaps, forbidden statements) are cheap and
testable, and the engine can refuse a bad directory without opening a connection.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

FILE_RE = re.compile(r"^(\d+)_([A-Za-z0-9][A-Za-z0-9_.\-]*)\.sql$")
ROLLBACK_RE = re.compile(r"^(\d+)_rollback\.sql$")
DIRECTIVE_RE = re.compile(r"^--\s*hft:([a-z\-]+)\s*$")
KNOWN_DIRECTIVES = frozenset({"no-transaction"})
# Statements the engine owns: a file that runs them would break one-transaction-per-file.
TX_KEYWORDS = frozenset({"BEGIN", "COMMIT", "ROLLBACK", "START", "END", "ABORT", "SAVEPOINT",
                         "RELEASE", "PREPARE"})
CIC_RE = re.compile(
    r"^\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+(?:IF\s+NOT\s+EXISTS\s+)?"
    r"((?:\"[^\"]+\"|[A-Za-z_][A-Za-z0-9_$]*)(?:\.(?:\"[^\"]+\"|[A-Za-z_][A-Za-z0-9_$]*))?)",
    re.IGNORECASE)


class MigrationFileError(Exception):
    """A migration file or directory is unusable; nothing may be applied."""


@dataclass(frozen=True)
class Statement:
    """One top-level SQL statement and the 1-based line where it starts."""

    sql: str
    line: int

    @property
    def first_word(self) -> str:
        m = re.match(r"\s*([A-Za-z]+)", strip_comments(self.sql))
        return m.group(1).upper() if m else ""

    @property
    def concurrent_index(self) -> str | None:
        """Name of the index if this is CREATE INDEX CONCURRENTLY, else None."""
        m = CIC_RE.match(strip_comments(self.sql))
        return m.group(1) if m else None


@dataclass(frozen=True)
class MigrationFile:
    """A forward migration ``NNN_description.sql`` and its optional rollback."""

    version: int
    description: str
    path: Path
    text: str
    checksum: str
    directives: frozenset[str]
    rollback_path: Path | None

    @property
    def transactional(self) -> bool:
        return "no-transaction" not in self.directives

    @property
    def name(self) -> str:
        return self.path.name


def checksum(data: bytes) -> str:
    """sha256 of the exact bytes: any edit of an applied file, even whitespace, is a change."""
    return hashlib.sha256(data).hexdigest()


def parse_directives(text: str, where: str) -> frozenset[str]:
    """Read ``-- hft:NAME`` lines from the leading comment block of a file."""
    found: set[str] = set()
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if not line.startswith("--"):
            break
        m = DIRECTIVE_RE.match(line)
        if m:
            if m.group(1) not in KNOWN_DIRECTIVES:
                raise MigrationFileError(f"{where}: unknown directive 'hft:{m.group(1)}' "
                                         f"(known: {', '.join(sorted(KNOWN_DIRECTIVES))})")
            found.add(m.group(1))
    return frozenset(found)


def read_rollback(path: Path) -> tuple[str, frozenset[str]]:
    """Text and directives of a rollback file, checked like a forward migration."""
    text = path.read_text(encoding="utf-8")
    directives = parse_directives(text, path.name)
    check_statements(text, path.name)
    return text, directives


def discover(directory: Path) -> list[MigrationFile]:
    """All forward migrations in ``directory`` sorted by version.

    Raises MigrationFileError for duplicate versions, gaps, bad directives or statements
    the engine owns (BEGIN/COMMIT, writes to schema_version).
    """
    if not directory.is_dir():
        raise MigrationFileError(f"migrations directory {directory} does not exist")
    by_version: dict[int, list[Path]] = {}
    for path in sorted(directory.iterdir()):
        m = FILE_RE.match(path.name)
        if m and path.is_file():
            by_version.setdefault(int(m.group(1)), []).append(path)
    dups = {v: ps for v, ps in by_version.items() if len(ps) > 1}
    if dups:
        detail = "; ".join(f"{v}: {', '.join(p.name for p in ps)}" for v, ps in sorted(dups.items()))
        raise MigrationFileError(f"duplicate migration version(s): {detail}")
    rollbacks = _rollbacks(directory / "rollback")
    result: list[MigrationFile] = []
    for version, (path,) in sorted(by_version.items()):
        data = path.read_bytes()
        text = data.decode("utf-8")
        desc = FILE_RE.match(path.name).group(2).replace("_", " ")  # type: ignore[union-attr]
        directives = parse_directives(text, path.name)
        check_statements(text, path.name)
        result.append(MigrationFile(version, desc, path, text, checksum(data), directives,
                                    rollbacks.get(version)))
    return result


def _rollbacks(directory: Path) -> dict[int, Path]:
    found: dict[int, Path] = {}
    if directory.is_dir():
        for path in sorted(directory.iterdir()):
            m = ROLLBACK_RE.match(path.name)
            if m:
                version = int(m.group(1))
                if version in found:
                    raise MigrationFileError(f"duplicate rollback files for version {version}: "
                                             f"{found[version].name}, {path.name}")
                found[version] = path
    return found


def check_gaps(files: list[MigrationFile], floor: int) -> None:
    """Versions above ``floor`` (a baseline, else 0) must be floor+1, floor+2, ... with no hole."""
    expected = floor + 1
    for f in files:
        if f.version <= floor:
            continue
        if f.version != expected:
            raise MigrationFileError(
                f"gap in migration versions: expected version {expected}, found {f.name} "
                f"(versions must be consecutive; renumber or add the missing file)")
        expected += 1


def check_statements(text: str, where: str) -> None:
    """Refuse transaction control and schema_version writes: the engine does both."""
    for stmt in split_statements(text):
        word = stmt.first_word
        if word in TX_KEYWORDS:
            raise MigrationFileError(
                f"{where} line {stmt.line}: '{word}' found; migration files must not contain "
                f"transaction control (the engine wraps each migration in its own transaction)")
        body = strip_comments(stmt.sql)
        if word in {"INSERT", "UPDATE", "DELETE"} and re.search(r"\bschema_version\b", body, re.I):
            raise MigrationFileError(
                f"{where} line {stmt.line}: writes to schema_version; the engine records "
                f"versions itself, remove this statement")


def strip_comments(sql: str) -> str:
    """Drop leading ``--`` and ``/* */`` comments (enough to find the first keyword)."""
    out = sql.lstrip()
    while True:
        if out.startswith("--"):
            nl = out.find("\n")
            out = "" if nl < 0 else out[nl + 1:].lstrip()
        elif out.startswith("/*"):
            depth, i = 1, 2
            while i < len(out) and depth:
                if out.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif out.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            out = out[i:].lstrip()
        else:
            return out


def split_statements(text: str) -> list[Statement]:
    """Split SQL into top-level statements like psql does.

    Why not hand the whole file to the server: statements of a non-transactional migration
    must be sent one by one (a multi-statement query string is an implicit transaction, and
    CREATE INDEX CONCURRENTLY refuses to run in one). Handles quotes, E'' strings, quoted
    identifiers, dollar quoting, nested block comments, line comments and BEGIN ATOMIC bodies.
    """
    stmts: list[Statement] = []
    i, n = 0, len(text)
    start, line, start_line = 0, 1, 1
    atomic_depth = -1  # >= 0 while inside BEGIN ATOMIC ... END
    word_re = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
    prev_words: list[str] = []

    def flush(end: int) -> None:
        chunk = text[start:end]
        body = strip_comments(chunk)
        if body.strip():  # report the line of the first keyword, not of a leading comment
            skipped = chunk.count("\n", 0, len(chunk) - len(body))
            stmts.append(Statement(body.strip(), start_line + skipped))

    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif text.startswith("--", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    line += text[i] == "\n"
                    i += 1
        elif c in "'\"":
            backslash = c == "'" and i > 0 and text[i - 1] in "eE" and \
                (i < 2 or not (text[i - 2].isalnum() or text[i - 2] == "_"))
            i += 1
            while i < n:
                ch = text[i]
                if backslash and ch == "\\":
                    i += 2
                    continue
                if ch == c:
                    if i + 1 < n and text[i + 1] == c:
                        i += 2
                        continue
                    i += 1
                    break
                line += ch == "\n"
                i += 1
        elif c == "$" and (m := re.match(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$", text[i:])) and \
                not (i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_")):
            tag = m.group(0)
            end = text.find(tag, i + len(tag))
            end = n if end < 0 else end + len(tag)
            line += text.count("\n", i, end)
            i = end
        elif c.isalpha() or c == "_":
            m = word_re.match(text, i)
            assert m is not None
            word = m.group(0).upper()
            if atomic_depth < 0 and word == "ATOMIC" and prev_words[-1:] == ["BEGIN"]:
                atomic_depth = 0
            elif atomic_depth >= 0 and word == "CASE":
                atomic_depth += 1
            elif atomic_depth >= 0 and word == "END":
                atomic_depth -= 1
            prev_words = (prev_words + [word])[-2:]
            i = m.end()
        elif c == ";" and atomic_depth < 0:
            flush(i)
            i += 1
            start, start_line, prev_words = i, line, []
            # the next statement starts at its first non-blank line
            while start < n and text[start] in " \t\r\n":
                if text[start] == "\n":
                    start_line += 1
                start += 1
            i, line = start, start_line
        else:
            i += 1
    flush(n)
    return stmts
