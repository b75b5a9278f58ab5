"""One error type for every bad input: it names the file, the field and what was expected."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class ConfigError(ValueError):
    """A user-facing input error.

    ``str(err)`` reads ``<file>:<line>: <field>: <message>`` with the parts that are known.
    """

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None,
                 line: int | None = None):
        self.message = message
        self.file = file
        self.field = field
        self.line = line
        super().__init__(self._render())

    def _render(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        what = f"field '{self.field}': " if self.field else ""
        return f"{where}{what}{self.message}"

    def located(self, *, file: str | None = None, line: int | None = None,
                field_prefix: str | None = None) -> "ConfigError":
        """A copy with the file/line (and a field prefix) filled in where still unknown."""
        field = self.field
        if field_prefix:
            field = f"{field_prefix}.{field}" if field else field_prefix
        return ConfigError(self.message, file=self.file or file, line=self.line or line,
                           field=field)


def suggest(name: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for a close match, else ''."""
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown(kind: str, name: str, choices: Iterable[str]) -> str:
    """Message for an unknown name: what was given, the close match, and the choices."""
    choices = sorted(choices)
    return f"unknown {kind} '{name}'{suggest(name, choices)}; expected one of: {', '.join(choices)}"
