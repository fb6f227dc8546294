"""One loader module per file format, and the table that picks one by extension.

Each module (:mod:`.text`, :mod:`.markdown`, :mod:`.html`, :mod:`.pdf`, :mod:`.image`) declares
its ``EXTENSIONS`` and one ``load_<format>(RawFile, LoadOptions, captions) -> Loaded`` function;
:mod:`.common` holds the records and the decoding / chunk building they share. Callers go
through :func:`mmrag.ingest.loaders.load_document`, which checks the file first.
"""

from __future__ import annotations

from collections.abc import Mapping

from mmrag.ingest.formats import html, image, markdown, pdf, text
from mmrag.ingest.formats.common import Captions, Loaded, Loader, LoadOptions, RawFile

__all__ = ["LOADERS", "Captions", "LoadOptions", "Loaded", "Loader", "RawFile"]

LOADERS: Mapping[str, Loader] = {
    **dict.fromkeys(text.EXTENSIONS, text.load_text),
    **dict.fromkeys(markdown.EXTENSIONS, markdown.load_markdown),
    **dict.fromkeys(html.EXTENSIONS, html.load_html),
    **dict.fromkeys(pdf.EXTENSIONS, pdf.load_pdf),
    **dict.fromkeys(image.EXTENSIONS, image.load_image),
}
