"""Markdown (``.md``, ``.markdown``): structure-aware chunking.

The text is split into sections at ATX / setext headings (outside code fences); each section's
chunks carry ``heading`` (the nearest heading) and ``headings`` (the path from the top level),
and the same path as their citation.
Inside a section, blocks (paragraphs, fenced code, pipe tables) are packed whole into chunks up
to the chunk size: a code block or table is never cut unless it alone is larger than a chunk,
and then only between its lines (``metadata["split_block"] = True``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from mmrag.ingest.chunking import ChunkingOptions, measure, normalize, split_text
from mmrag.ingest.formats.common import (
    Captions,
    Loaded,
    LoadOptions,
    RawFile,
    chunks_from_pieces,
    decode_text,
)
from mmrag.types import Citation

EXTENSIONS = frozenset({".md", ".markdown"})

_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t#]*$")
_SETEXT_UNDERLINE = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$|^[^|]+(\|[^|]*)+$")


@dataclass(slots=True)
class Block:
    text: str
    kind: str  # "prose" | "code" | "table"


@dataclass(slots=True)
class Section:
    headings: list[str]
    blocks: list[Block]


def _flush_prose(lines: list[str], blocks: list[Block]) -> None:
    if any(s.strip() for s in lines):
        blocks.append(Block("\n".join(lines), "prose"))
    lines.clear()


def sections(text: str) -> list[Section]:
    """Headings and blocks of a Markdown document, in order."""
    out: list[Section] = []
    path: list[tuple[int, str]] = []
    current = Section([], [])
    prose: list[str] = []
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(line)
        if fence:
            _flush_prose(prose, current.blocks)
            marker = fence.group(1)
            j = i + 1
            while j < len(lines) and not lines[j].lstrip().startswith(marker[0] * len(marker)):
                j += 1
            current.blocks.append(Block("\n".join(lines[i : j + 1]), "code"))
            i = j + 1
            continue
        level, heading = 0, None
        atx = _ATX_HEADING.match(line)
        if atx:
            level, heading = len(atx.group(1)), atx.group(2).strip()
        elif (
            _SETEXT_UNDERLINE.match(line)
            and prose
            and prose[-1].strip()
            and (len(prose) == 1 or not prose[-2].strip())
        ):
            heading = prose.pop().strip()
            level = 1 if line.strip().startswith("=") else 2
            line = heading
        if heading is not None:
            _flush_prose(prose, current.blocks)
            if current.blocks:
                out.append(current)
            path = [(lv, h) for lv, h in path if lv < level] + [(level, heading)]
            # The heading line stays at the top of its section's first chunk, as written.
            shown = line.strip() if atx else heading
            current = Section([h for _, h in path], [Block(shown, "prose")])
            i += 1
            continue
        if _TABLE_ROW.match(line) and i + 1 < len(lines) and set(lines[i + 1].strip()) <= set("|:- "):
            _flush_prose(prose, current.blocks)
            j = i
            while j < len(lines) and lines[j].strip() and "|" in lines[j]:
                j += 1
            current.blocks.append(Block("\n".join(lines[i:j]), "table"))
            i = j
            continue
        if not line.strip():
            _flush_prose(prose, current.blocks)
        else:
            prose.append(line)
        i += 1
    _flush_prose(prose, current.blocks)
    if current.blocks:
        out.append(current)
    return out


def _split_lines(text: str, opts: ChunkingOptions) -> list[str]:
    """A code block / table bigger than a chunk: pack whole lines (a line longer than a chunk
    is the only thing ever cut, by the word splitter)."""
    out: list[str] = []
    cur: list[str] = []
    size = 0
    for line in text.split("\n"):
        n = measure(line, opts)
        if n > opts.budget:
            if cur:
                out.append("\n".join(cur))
            out.extend(split_text(line, opts))
            cur, size = [], 0
            continue
        if cur and size + n > opts.budget:
            out.append("\n".join(cur))
            cur, size = [], 0
        cur.append(line)
        size += n
    if cur and any(s.strip() for s in cur):
        out.append("\n".join(cur))
    return out


def chunk_markdown(text: str, opts: ChunkingOptions) -> list[tuple[str, dict[str, Any]]]:
    """``(chunk text, metadata)`` pairs for a Markdown document."""
    out: list[tuple[str, dict[str, Any]]] = []
    for sec in sections(text):
        meta: dict[str, Any] = {"heading": sec.headings[-1], "headings": sec.headings} if sec.headings else {}
        cur: list[str] = []
        size = 0

        def flush(meta: dict[str, Any] = meta) -> None:
            nonlocal cur, size
            if cur:
                out.append(("\n\n".join(cur), dict(meta)))
            cur, size = [], 0

        for block in sec.blocks:
            body = normalize(block.text) if block.kind == "prose" else block.text.strip("\n")
            if not body.strip():
                continue
            n = measure(body, opts)
            if n > opts.budget:
                flush()
                pieces = split_text(body, opts) if block.kind == "prose" else _split_lines(body, opts)
                extra = {"split_block": True, "block": block.kind} if block.kind != "prose" else {}
                out.extend((p, {**meta, **extra}) for p in pieces)
                continue
            if cur and size + n > opts.budget:
                flush()
            cur.append(body)
            size += n
        flush()
    return out


def load_markdown(file: RawFile, opts: LoadOptions, captions: Captions | None = None) -> Loaded:
    """Chunks of a Markdown file, each with its heading path.

    Raises:
        LoaderError: Binary content, undecodable bytes, or no text at all.
    """
    pieces = chunk_markdown(decode_text(file.data), opts.chunking)
    chunks = chunks_from_pieces(file.source, pieces, fmt="markdown", file_hash=file.digest)
    return Loaded(
        [
            replace(c, citation=Citation(headings=tuple(c.metadata["headings"])))
            if c.metadata.get("headings")
            else c
            for c in chunks
        ]
    )
