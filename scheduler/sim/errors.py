"""Input errors that name the file, the line and the field, for people to fix."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad input in a trace or a cluster file. Its text is meant for the user, as is."""

    def __init__(
        self, path: Path | str, message: str, line: int | None = None, field: str | None = None
    ) -> None:
        self.path = str(path)
        self.line = line
        self.field = field
        where = self.path if line is None else f"{self.path}:{line}"
        what = f"field '{field}': " if field else ""
        super().__init__(f"{where}: {what}{message}")
