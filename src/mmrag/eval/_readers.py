"""Line readers shared by the dataset loaders: JSON lines and string fields, with errors that name the
file, the line and the expected layout."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from mmrag.errors import DatasetError


def read_jsonl(path: Path, layout: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, object)`` for each non-blank line of a JSON-lines file."""
    if not path.is_file():
        raise DatasetError(f"{path} not found; expected the {layout}")
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(
                    f"{path}:{lineno}: not valid JSON ({exc.msg}); "
                    f"expected one JSON object a line in the {layout}"
                ) from exc
            if not isinstance(row, dict):
                raise DatasetError(
                    f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}; see the {layout}"
                )
            yield lineno, row


def str_field(row: Mapping[str, Any], key: str, where: str, layout: str, *, required: bool = True) -> str:
    value = row.get(key)
    if value is None and not required:
        return ""
    if isinstance(value, int) and not isinstance(value, bool) and key == "_id":
        # Some BEIR exports write numeric ids; qrels are read as text, so ids must be text too.
        return str(value)
    if not isinstance(value, str):
        found = "missing" if value is None else f"a {type(value).__name__}"
        raise DatasetError(f"{where}: field {key!r} is {found}, expected a string; see the {layout}")
    return value
