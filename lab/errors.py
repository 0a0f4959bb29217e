"""One error type that always says which host, which step, and what to do next.

A lab failure is only useful if the operator can act on it without reading a traceback, so
every failure the lab anticipates is raised as :class:`LabError` and printed as three lines.
"""

from __future__ import annotations


class LabError(Exception):
    """A failure of one lab step, optionally on one host, with a hint for the operator."""

    def __init__(self, step: str, message: str, hint: str = "", host: str | None = None) -> None:
        super().__init__(message)
        self.step = step
        self.message = message
        self.hint = hint
        self.host = host

    def render(self) -> str:
        where = f"{self.host}: " if self.host else ""
        text = f"lab: {where}{self.step} failed: {self.message}"
        if self.hint:
            text += f"\n  what to do: {self.hint}"
        return text
