"""The one lazy-import helper: heavy and optional dependencies load on first use."""

from __future__ import annotations

import importlib
from types import ModuleType

from mmrag.errors import MissingExtraError


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise an error naming the extra that provides it.

    Example:
        >>> np = require("numpy", "core")
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{module!r} is not installed; it is part of mmrag's {extra!r} extra. "
            f"Install it with: pip install 'mmrag[{extra}]'"
        ) from exc
