"""Citations: where a chunk sits in its document (page, boxes in page coordinates, heading path).

A record of the base layer (re-exported by :mod:`mmrag.types`, which the rest of the package imports).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Box", "Citation"]

Box = tuple[float, float, float, float]


def _box(value: Any, n: int = 4) -> Any:
    """A stored box (or ``n`` numbers) back as a tuple of floats; ``None`` for anything else."""
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):  # not numbers
        return None
    return out if len(out) == n else None


@dataclass(frozen=True, slots=True)
class Citation:
    """Where a chunk sits in its document, so that an answer can cite it and a UI can show it.

    Boxes are PDF page coordinates as pdfium gives them: ``(left, bottom, right, top)`` in points,
    origin at the page's bottom-left corner (``page_size`` lets a client flip or normalise them).

    Attributes:
        page: 1-based page of a PDF (``None`` for formats without pages).
        bbox: The union of ``boxes``: the region to cite or crop.
        boxes: A text chunk's line boxes in reading order (one per line segment; OCR'd scans: the
            word boxes merged per line), or a figure's own box.
        page_size: The page's ``(width, height)`` in points.
        headings: HTML / Markdown heading path from the top level, e.g. ``("Intro", "Setup")``.

    Example:
        >>> Citation(page=3, bbox=(72.0, 500.0, 540.0, 620.5)).to_text()
        'p. 3, bbox (72.0, 500.0, 540.0, 620.5)'
    """

    page: int | None = None
    bbox: Box | None = None
    boxes: tuple[Box, ...] = ()
    page_size: tuple[float, float] | None = None
    headings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the payload's ``citation`` and the hits' ``citation``); lists, not tuples."""
        return {
            "page": self.page,
            "bbox": list(self.bbox) if self.bbox else None,
            "boxes": [list(b) for b in self.boxes],
            "page_size": list(self.page_size) if self.page_size else None,
            "headings": list(self.headings),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Citation:
        """The inverse of :meth:`to_dict`; malformed fields are dropped rather than fatal."""
        page, boxes, headings = data.get("page"), data.get("boxes"), data.get("headings")
        return cls(
            page=int(page) if isinstance(page, int | float) else None,
            bbox=_box(data.get("bbox")),
            boxes=tuple(b for b in map(_box, boxes) if b is not None)
            if isinstance(boxes, list | tuple)
            else (),
            page_size=_box(data.get("page_size"), 2),
            headings=tuple(str(h) for h in headings) if isinstance(headings, list | tuple) else (),
        )

    def to_text(self) -> str:
        """``p. 3, bbox (x0, y0, x1, y1)`` and / or the heading path, for text output."""
        bbox = "bbox (" + ", ".join(f"{v:.1f}" for v in self.bbox) + ")" if self.bbox else ""
        page = f"p. {self.page}" if self.page is not None else ""
        return ", ".join(p for p in (page, bbox, " › ".join(self.headings)) if p)
