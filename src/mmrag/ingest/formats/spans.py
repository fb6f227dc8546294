"""Where each chunk lies in the text it was cut from: what ties chunks to page boxes and headings.

The chunker folds whitespace and drops invisible characters, so a chunk is not a substring of the
text it came from. Its *ink* is: the characters left once whitespace and invisible characters are
dropped and compatibility forms folded (NFKC: a PDF's "ﬁ" ligature glyph is "fi"). A chunk's ink
is a substring of its source's ink, so locating chunks there is an exact string search, and any
per-character tag (a glyph's box on the page, the heading a character falls under) maps back.

Example:
    >>> locate(ink("Hello,\\n  world. Bye now."), [ink("Hello, world."), ink("Bye now.")])
    [(0, 12), (12, 19)]
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import TypeVar

# The chunker's own set of invisible characters: the ink must drop exactly what it drops.
from mmrag.ingest.chunking import _INVISIBLE

__all__ = ["MAX_BOXES", "Box", "ink", "ink_tagged", "line_boxes", "locate", "union"]

T = TypeVar("T")
Box = tuple[float, float, float, float]

MAX_BOXES = 64  # line boxes kept per chunk; the union (bbox) always covers them all
_WHITESPACE = re.compile(r"\s+")
_ANCHOR = 24  # ink characters matched at each end when the whole chunk is not found verbatim


def ink(text: str) -> str:
    """``text`` without whitespace and invisible characters, NFKC-folded."""
    return _WHITESPACE.sub("", unicodedata.normalize("NFKC", _INVISIBLE.sub("", text)))


def ink_tagged(chars: Iterable[tuple[str, T]]) -> tuple[str, list[T]]:
    """The ink of a sequence of ``(character, tag)`` pairs, and the tag of each ink character
    (a character that folds to several, such as a ligature, tags each of them)."""
    out: list[str] = []
    tags: list[T] = []
    for ch, tag in chars:
        folded = _ink_char(ch)
        if len(folded) == 1:
            out.append(folded)
            tags.append(tag)
        elif folded:
            out.append(folded)
            tags.extend([tag] * len(folded))
    return "".join(out), tags


@functools.lru_cache(maxsize=4096)
def _ink_char(ch: str) -> str:
    # A page repeats a few hundred distinct characters thousands of times.
    return ink(ch)


def locate(haystack: str, needles: Sequence[str]) -> list[tuple[int, int] | None]:
    """The ``[start, end)`` span of each needle (ink, in order) in ``haystack`` (ink).

    Needles are searched in reading order from where the previous one started (chunks overlap),
    then anywhere; a needle that differs inside (a glyph the text layer reports differently) is
    still placed by its first and last characters. ``None``: not found at all.
    """
    out: list[tuple[int, int] | None] = []
    cursor = 0
    for needle in needles:
        span = _find(haystack, needle, cursor) if needle else None
        if span is None and cursor:
            span = _find(haystack, needle, 0) if needle else None
        if span is not None:
            cursor = span[0] + 1
        out.append(span)
    return out


def _find(haystack: str, needle: str, cursor: int) -> tuple[int, int] | None:
    pos = haystack.find(needle, cursor)
    if pos >= 0:
        return pos, pos + len(needle)
    if len(needle) <= 2 * _ANCHOR:
        return None
    start = haystack.find(needle[:_ANCHOR], cursor)
    if start < 0:
        return None
    end = haystack.find(needle[-_ANCHOR:], start + _ANCHOR)
    # Both ends found and about as far apart as the needle is long: the same passage.
    if end < 0 or not 0.8 * len(needle) <= end + _ANCHOR - start <= 1.25 * len(needle):
        return None
    return start, end + _ANCHOR


def union(boxes: Iterable[Box]) -> Box | None:
    """The smallest box holding all of ``boxes`` (``None`` for none)."""
    items = list(boxes)
    if not items:
        return None
    return (
        min(b[0] for b in items),
        min(b[1] for b in items),
        max(b[2] for b in items),
        max(b[3] for b in items),
    )


def line_boxes(boxes: Sequence[Box]) -> list[Box]:
    """Character (or word) boxes in reading order merged into one box per line segment.

    A box continues the current line when it overlaps it vertically by half its height and does
    not jump back left (a jump back is the next line, or the next column at the same height).
    Vertical text (an arXiv stamp in the margin) is one line too: a box in the same column as
    the current one (the same left and right), at most a space above or below, continues it.
    """
    lines: list[Box] = []
    for box in boxes:
        if box[2] <= box[0] and box[3] <= box[1]:
            continue  # an empty box (a generated character) says nothing about the position
        if lines:
            x0, y0, x1, y1 = lines[-1]
            bx0, by0, bx1, by1 = box
            v_overlap = (y1 if y1 < by1 else by1) - (y0 if y0 > by0 else by0)
            height = min(y1 - y0, by1 - by0)
            same_line = v_overlap >= 0.5 * height and bx0 >= x0 - 1.0
            # The same x extent (loose boxes of rotated glyphs share it), at most a space apart.
            same_column = abs(x0 - bx0) <= 1.0 and abs(x1 - bx1) <= 1.0 and v_overlap >= -height
            if same_line or same_column:
                lines[-1] = (min(x0, bx0), min(y0, by0), max(x1, bx1), max(y1, by1))
                continue
        lines.append(box)
    return lines
