"""HTML (``.html``, ``.htm``): the text a reader of the page sees, paragraphs kept apart.

Boilerplate that repeats on every page (scripts, navigation, headers, footers) and hidden
elements are dropped; block elements become paragraph breaks for the chunker; image alt texts
are appended; the page ``<title>`` goes into every chunk's metadata.
"""

from __future__ import annotations

import importlib.util
import re
import warnings
from typing import Any

from mmrag._lazy import require
from mmrag.errors import LoaderError
from mmrag.ingest.formats.common import Captions, Loaded, LoadOptions, RawFile, looks_binary, text_chunks

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
    text = root.get_text()
    if alts:
        text += "\n\n" + "\n".join(alts)
    extra: dict[str, Any] = {"title": title} if title else {}
    chunks = text_chunks(file.source, [(text, extra)], fmt="html", file_hash=file.digest, opts=opts.chunking)
    return Loaded(chunks)
