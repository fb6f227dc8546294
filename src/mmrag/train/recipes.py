"""Named training presets for ``mmrag train --recipe``: plain option values, measured in BENCHMARKS.md.

Kept free of heavy imports so the CLI can list them in its help. Explicit command-line options win
over a recipe's values.
"""

from __future__ import annotations

from typing import Any

RECIPES: dict[str, dict[str, Any]] = {
    "fast": {
        "help": "heads only, on cached features (the default; ~2 min cold on 2 CPU cores)",
        "options": {},
    },
    "quality": {
        "help": "heads, then the image trunk's last 5 blocks on 8 cached views per image (7 augmented) "
        "(~28 min on 2 CPU cores, cold)",
        "options": {
            "unfreeze_blocks": 5,
            "unfreeze_epochs": 14,
            "backbone_lr": 5e-4,
            "augment_views": 8,
        },
    },
}


def recipe_options(name: str | None) -> dict[str, Any]:
    """The option values of recipe ``name`` (none for ``None``)."""
    if name is None:
        return {}
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose from {', '.join(sorted(RECIPES))}")
    return dict(RECIPES[name]["options"])
