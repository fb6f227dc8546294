"""benchmarks/results/*.json for the report, each file read and parsed once (the summary table and
the sections below it quote the same files)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class ResultFiles:
    """The results folder; :meth:`get` and :meth:`glob` parse a file on first use, then reuse it.
    Every caller gets the same dict: renderers read it and never change it (the summary table is
    rendered after the sections, from the same dicts)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._parsed: dict[str, dict[str, Any]] = {}

    def get(self, name: str) -> dict[str, Any] | None:
        """``name``'s results, or None when the benchmark has not been run."""
        if name not in self._parsed:
            path = self.folder / name
            if not path.exists():
                return None
            self._parsed[name] = json.loads(path.read_text())
        return self._parsed[name]

    def glob(self, pattern: str) -> list[tuple[str, dict[str, Any]]]:
        """(file name, results) of every file matching ``pattern``, sorted by name (e.g. one
        ``cold_demo*.json`` per host class)."""
        names = sorted(p.name for p in self.folder.glob(pattern))
        return [(n, r) for n in names if (r := self.get(n)) is not None]
