"""HTML (``.html``, ``.htm``): the text a reader of the page sees, paragraphs kept apart.

Boilerplate that repeats on every page (scripts, navigation, headers, footers) and hidden
elements are dropped; block elements become paragraph breaks for the chunker; image alt texts
are appended; the page ``<title>`` goes into every chunk's metadata. Each chunk's citation holds
the heading path (``<h1>``..``<h6>``) in effect where the chunk starts.
"""

from __future__ import annotations

import importlib.util
import re
import warnings
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from mmrag._lazy import require
from mmrag.errors import LoaderError
from mmrag.ingest.formats.common import Captions, Loaded, LoadOptions, RawFile, looks_binary, text_chunks
from mmrag.ingest.formats.spans import ink, locate
from mmrag.types import Chunk, Citation

EXTENSIONS = frozenset({".html", ".htm"})

# Boilerplate that repeats on every page of a site and would crowd out the content; ix:header
# is the hidden block of XBRL facts at the top of every SEC inline-XBRL filing.
_HTML_DROP = ("script", "style", "noscript", "template", "nav", "header", "footer", "ix:header")
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.IGNORECASE)
_HTML_BLOCKS = (
    "address", "article", "aside", "blockquote", "caption", "dd", "div", "dl", "dt", "figcaption",
    "figure", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "li", "main", "ol", "p", "pre", "section",
    "table", "tbody", "tfoot", "thead", "tr", "ul",
)  # fmt: skip
_HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")
# A private-use character marks where each heading starts in the page text; it is removed again,
# so the text (and the chunks and their ids) are what they would be without it.
_MARK = "\ue000"


def load_html(file: RawFile, opts: LoadOptions, captions: Captions | None = None) -> Loaded:
    """Chunks of an HTML page.

    Raises:
        LoaderError: Binary content, markup the parser rejects, or no text at all.
    """
    data = file.data
    if looks_binary(data):
        raise LoaderError("binary content (NUL bytes); not an HTML file")
    bs4 = require("bs4", "core")
    parser = "lxml" if importlib.util.find_spec("lxml") is not None else "html.parser"
    try:
        with warnings.catch_warnings():
            # XHTML (SEC filings) starts with <?xml ...>; parsing it as HTML is what we want.
            warnings.simplefilter("ignore", bs4.XMLParsedAsHTMLWarning)
            soup = bs4.BeautifulSoup(data, parser)
    except (bs4.ParserRejectedMarkup, ValueError, LookupError) as exc:
        raise LoaderError(f"cannot parse HTML: {exc}") from exc
    title_tag = soup.find("title")
    title = " ".join(title_tag.get_text().split()) if title_tag is not None else ""
    for tag in soup.find_all(_HTML_DROP):
        tag.decompose()
    # Hidden elements are not what a reader of the page sees.
    for tag in soup.find_all(style=_HIDDEN_STYLE):
        tag.decompose()
    for tag in soup.find_all(hidden=True):
        tag.decompose()
    root = soup.find("main") or soup.find("body") or soup
    alts: list[str] = []
    for img in root.find_all("img"):
        alt = " ".join(str(img.get("alt") or "").split())
        if alt and alt not in alts:
            alts.append(alt)
    # Blank lines around block elements become paragraph breaks for the chunker; inline
    # elements (<b>, <a>, <span>) stay glued to their sentence.
    for tag in root.find_all(_HTML_BLOCKS):
        tag.insert_before("\n\n")
        tag.insert_after("\n\n")
    for tag in root.find_all(["td", "th"]):
        tag.insert_after(" ")
    for tag in root.find_all("br"):
        tag.replace_with("\n")
    marked = _MARK not in root.get_text()
    headings: list[tuple[int, str]] = []
    for tag in root.find_all(_HEADINGS) if marked else ():
        headings.append((int(tag.name[1]), " ".join(tag.get_text().split())))
        tag.insert_before(_MARK)
    text = root.get_text()
    starts = [i for i, ch in enumerate(ink(text)) if ch == _MARK]
    starts = [s - k for k, s in enumerate(starts)]  # ink offsets once the marks are gone
    text = text.replace(_MARK, "")
    if alts:
        text += "\n\n" + "\n".join(alts)
    extra: dict[str, Any] = {"title": title} if title else {}
    chunks = text_chunks(file.source, [(text, extra)], fmt="html", file_hash=file.digest, opts=opts.chunking)
    return Loaded(cite_headings(chunks, ink(text), list(zip(starts, headings, strict=True))))


def cite_headings(
    chunks: Sequence[Chunk], text_ink: str, headings: Sequence[tuple[int, tuple[int, str]]]
) -> list[Chunk]:
    """``chunks`` with the heading path in effect where each starts: ``headings`` are
    ``(ink offset, (level, title))`` in document order; a chunk before any heading has no citation."""
    out = list(chunks)
    spans = locate(text_ink, [ink(c.text or "") for c in out])
    for i, span in enumerate(spans):
        path: list[tuple[int, str]] = []
        for start, (level, title) in headings:
            if span is None or start > span[0]:
                break
            if title:
                path = [(lv, t) for lv, t in path if lv < level] + [(level, title)]
        if path:
            out[i] = replace(out[i], citation=Citation(headings=tuple(t for _, t in path)))
    return out
