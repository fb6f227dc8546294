"""What the Streamlit pages do, without Streamlit: open the store, run a query, find neighbours.

Kept free of ``streamlit`` imports so that it is typed, unit-tested and reusable; the pages in
:mod:`mmrag.ui.search_page` and :mod:`mmrag.ui.collection_page` only render.

Store access: Qdrant Edge takes an exclusive ``flock`` on the store directory, and ``flock`` locks
belong to an open file, so even two Streamlit sessions of the *same* server process would lock each
other out. Every page run therefore opens the store under one process-wide lock and closes it when
the run ends (~0.2 s on a 700-point store). Between runs the store is free, so ``mmrag ingest`` or
``mmrag search`` in a terminal keeps working beside the app; a store held by another process is
reported as such, not as a traceback.
"""

from __future__ import annotations

import html
import io
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmrag import wiring
from mmrag.config import Settings
from mmrag.errors import ConfigError, StoreError
from mmrag.retriever import Retriever
from mmrag.retriever.request import RetrievalMode, SearchRequest
from mmrag.store import QdrantStore
from mmrag.types import Chunk, Hit

if TYPE_CHECKING:
    from PIL import Image

    from mmrag.encoders.base import DualEncoder

# One store open at a time in this process (see the module docstring).
STORE_LOCK = threading.Lock()
# How long a page waits for another session's run (or an ingest) before saying the store is busy.
LOCK_WAIT_S = 20.0
STAGES = ("hybrid", "rerank")
SCORES = ("dense", "sparse", "fused", "rerank")
_STOPWORDS = frozenset(
    re.findall(
        r"\w+",
        "a an and are as at be by for from has have in is it its of on or that the this to was were with",
    )
)


@contextmanager
def open_store(settings: Settings, wait_s: float = LOCK_WAIT_S) -> Iterator[QdrantStore]:
    """Open the configured store for the length of one page run, then close it."""
    if not STORE_LOCK.acquire(timeout=wait_s):
        raise StoreError(
            f"the store is busy in this app (an ingest or another session has held it for over "
            f"{wait_s:.0f} s); try again when it finishes"
        )
    try:
        store = wiring.open_store(settings)
        try:
            yield store
        finally:
            store.close()
    finally:
        STORE_LOCK.release()


def encoder_spec(settings: Settings, store: QdrantStore) -> str:
    """The configured model, else the model the store was built with, else ``lite`` (as the CLI)."""
    return wiring.encoder_spec(settings, store)


def build_retriever(
    encoder: DualEncoder, store: QdrantStore, *, pool: int = 50, reranker: Any = None
) -> Retriever:
    """The one place the app builds its retriever: the store's model set by default (hybrid where the
    store has BM25 vectors, rerank when a cross-encoder is configured with ``mmrag ui --reranker`` /
    ``MMRAG_RERANKER`` or recorded as the store's default)."""
    return wiring.build_retriever(wiring.LoadedModels(encoder, reranker), store, pool=pool)


def capability_notes(capabilities: Mapping[str, bool]) -> dict[str, str]:
    """Why each optional stage is off: shown next to its disabled toggle."""
    reasons = {
        "hybrid": "not available: this retriever has no sparse (BM25) stage",
        "rerank": "not available: no reranker is configured, and the store records none "
        "(`mmrag model-set --reranker M`)",
    }
    return {s: reasons[s] for s in STAGES if not capabilities.get(s, False)}


def load_query_image(data: bytes, name: str = "upload") -> Image.Image:
    """Decode an uploaded query image, or a :class:`ConfigError` saying it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
        img.load()  # decode now: a truncated file fails here, not inside the encoder
        return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ConfigError(f"{name} is not a readable image ({exc}); upload a JPEG, PNG or WebP file") from exc


@dataclass(frozen=True, slots=True)
class QueryRequest:
    """One search as the page asks for it (text, image or both)."""

    text: str | None = None
    image: Image.Image | None = None
    k: int = 10
    pool: int = 50
    modality: str | None = None
    sources: Sequence[str] = ()
    tenants: Sequence[str] = ()
    hybrid: bool = False
    rerank: bool = False
    image_weight: float = 0.5
    group_by: str | None = None
    group_size: int = 1
    expand: int = 0
    mmr_lambda: float | None = None

    @property
    def refines(self) -> bool:
        """Grouped, expanded or diversified results: the retriever returns just what is shown."""
        return self.group_by is not None or self.expand > 0 or self.mmr_lambda is not None

    def filters(self) -> dict[str, str | list[str]]:
        out: dict[str, str | list[str]] = {}
        if self.sources:
            out["source"] = list(self.sources)
        if self.tenants:
            out["tenant"] = list(self.tenants)
        return out

    def search_request(self) -> SearchRequest:
        """The retriever's request: the whole pool as ``k`` (its score distribution is drawn), each
        toggle as an explicit on / off (off even where the retriever's default is on); an image or a
        text + image query runs dense only (the optional stages take one text query). Grouped, expanded
        or diversified results ask for ``k`` (documents when grouped) out of the pool."""
        text = self.text.strip() if self.text and self.text.strip() else None
        composed = self.image is not None
        size = max(self.k, self.pool)
        return SearchRequest(
            text=text,
            image=self.image,
            k=self.k if self.refines else size,
            pool=size,
            image_weight=self.image_weight,
            group_by=self.group_by,
            group_size=self.group_size,
            expand=self.expand,
            mmr_lambda=self.mmr_lambda,
            modality=self.modality,
            filters=self.filters() or None,
            mode=RetrievalMode.HYBRID if self.hybrid and not composed else RetrievalMode.DENSE,
            rerank=self.rerank and not composed,
        )


@dataclass(slots=True)
class QueryOutcome:
    """The whole candidate pool (best first), the ``k`` shown, timings in seconds, notes for the user."""

    pool: list[Hit]
    k: int
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    query_text: str | None = None
    filtered: bool = False

    @property
    def shown(self) -> list[Hit]:
        return self.pool[: self.k]


def run_query(retriever: Retriever, req: QueryRequest) -> QueryOutcome:
    """Fetch the whole pool (so its score distribution can be drawn) and keep ``k`` to show.

    A text-and-image query searches with the normalised sum of both embeddings (one point in the
    shared space); the optional stages take one query, so they run for single-modality queries only.
    """
    text = req.text.strip() if req.text and req.text.strip() else None
    if text is None and req.image is None:
        raise ConfigError("type a query, upload an image, or both")
    if req.k < 1 or req.pool < 1:
        raise ConfigError("k and pool must be >= 1")
    notes: list[str] = []
    enc = retriever.encoder
    cross_modal = req.image is not None or req.modality == "image"
    if not enc.aligned and cross_modal:
        notes.append(
            f"encoder {enc.id} has untrained image/text heads: image and cross-modal scores are not "
            "meaningful until it is trained (`mmrag train`)"
        )
    if text is not None and req.image is not None and (req.hybrid or req.rerank):
        notes.append("hybrid and rerank run on text queries; this text + image query used dense only")
    res = retriever.run(req.search_request())
    hits, timings = res.hits, dict(res.timings)
    return QueryOutcome(
        pool=hits,
        k=len(hits) if req.refines else req.k,  # grouped: up to k documents x group_size hits
        timings=timings,
        notes=notes,
        query_text=text,
        filtered=bool(req.filters() or req.modality),
    )


def fmt_score(value: float | None) -> str:
    """A score for display; ``—`` where the stage did not run."""
    return "—" if value is None else f"{value:.4f}"


def rank_shift(hit: Hit) -> str:
    """``▲n`` / ``▼n`` when a later stage moved the hit, ``=`` when it kept its first-stage rank."""
    delta = hit.ann_rank - hit.final_rank
    if delta > 0:
        return f"▲{delta}"
    if delta < 0:
        return f"▼{-delta}"
    return "="


def query_terms(query: str | None) -> list[str]:
    """Words of the query worth highlighting (no stopwords, no 1-letter words), longest first."""
    if not query:
        return []
    words = {w for w in re.findall(r"\w+", query.lower()) if len(w) > 1 and w not in _STOPWORDS}
    return sorted(words, key=lambda w: (-len(w), w))


def highlight(text: str, query: str | None, limit: int | None = None) -> str:
    """HTML-escaped ``text`` with the query's words wrapped in ``<mark>`` (whole words, any case)."""
    body = text if limit is None or len(text) <= limit else text[:limit].rstrip() + " …"
    terms = query_terms(query)
    if not terms:
        return html.escape(body)
    pattern = re.compile(r"\b(" + "|".join(re.escape(t) for t in terms) + r")\b", re.IGNORECASE)
    out: list[str] = []
    last = 0
    for m in pattern.finditer(body):
        out.append(html.escape(body[last : m.start()]))
        out.append(f"<mark>{html.escape(m.group(0))}</mark>")
        last = m.end()
    out.append(html.escape(body[last:]))
    return "".join(out)


def chunk_position(chunk: Chunk) -> tuple[int, int]:
    """Sort key of a chunk inside its source: (page, position) from the loader's metadata."""
    meta = chunk.metadata

    def _int(key: str) -> int:
        try:
            return int(meta.get(key) or 0)
        except (TypeError, ValueError):
            return 0

    return _int("page"), _int("position")


def neighbours(store: QdrantStore, chunk: Chunk, width: int = 2) -> tuple[list[Chunk], list[Chunk]]:
    """Up to ``width`` chunks before and after ``chunk`` in its source, in reading order.

    Loaders number chunks with ``metadata.position`` across the whole file (PDFs also carry
    ``page``), so reading order is (page, position).
    """
    from mmrag.store import payload_chunk

    same = [payload_chunk(r.id, r.payload) for r in store.iter_records({"source": chunk.source})]
    same.sort(key=chunk_position)
    ids = [c.id for c in same]
    if chunk.id not in ids:
        return [], []
    i = ids.index(chunk.id)
    return same[max(0, i - width) : i], same[i + 1 : i + 1 + width]


def facet(store: QdrantStore, key: str, limit: int = 10_000) -> dict[str, int]:
    """Counts of payload ``key`` values (``source``, ``tenant``), largest first."""
    counts = store.backend.facet(key, limit=limit)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def short_source(source: str, root: str | None = None) -> str:
    """A source path relative to ``root`` when inside it, else as stored."""
    if root:
        try:
            return str(Path(source).relative_to(root))
        except ValueError:
            return source
    return source


def common_root(sources: Sequence[str]) -> str | None:
    """The deepest folder shared by all sources (to shorten them on screen)."""
    paths = [Path(s) for s in sources if s.startswith("/")]
    if len(paths) != len(sources) or not paths:
        return None
    parts = list(paths[0].parent.parts)
    for p in paths[1:]:
        pp = p.parent.parts
        n = 0
        while n < min(len(parts), len(pp)) and parts[n] == pp[n]:
            n += 1
        parts = parts[:n]
    return str(Path(*parts)) if len(parts) > 1 else None


def display_meta(chunk: Chunk) -> dict[str, Any]:
    """Metadata worth reading (the file hash is long and not useful on screen)."""
    return {k: v for k, v in chunk.metadata.items() if k != "file_hash"}


# -- ingest from the app ------------------------------------------------------------------------
def allowed_roots(settings: Settings) -> list[Path]:
    """Folders the ingest form may read from: ``ingest_root`` if set, else the cwd and the data folder."""
    if settings.ingest_root:
        return [Path(settings.ingest_root).expanduser().resolve()]
    roots = [Path.cwd().resolve()]
    data = settings.data_path.expanduser().resolve()
    if data.is_dir() and data not in roots:
        roots.append(data)
    return roots


def resolve_ingest_folder(raw: str, roots: Sequence[Path]) -> Path:
    """The folder (or file) to ingest, resolved (``..`` and links) and checked to lie inside a root."""
    if not raw.strip():
        raise ConfigError("enter a folder to ingest")
    path = Path(raw.strip()).expanduser()
    if not path.is_absolute():
        path = roots[0] / path
    path = path.resolve()
    if not any(path == r or path.is_relative_to(r) for r in roots):
        allowed = ", ".join(str(r) for r in roots)
        raise ConfigError(
            f"{path} is outside the folders this app may ingest from ({allowed}); see --ingest-root"
        )
    if not path.exists():
        raise ConfigError(f"{path} does not exist")
    return path


def uploads_dir(settings: Settings) -> Path:
    """Where uploaded files are kept: image chunks point at their files, so they must outlive the run.

    Next to an embedded store (``<store>/uploads``); for a server store, a ``mmrag-uploads`` folder in
    the working directory.
    """
    store = settings.store
    if store.startswith(("http://", "https://")) or store == ":memory:":
        return Path.cwd() / "mmrag-uploads"
    return Path(store).expanduser() / "uploads"


def save_uploads(files: Sequence[tuple[str, bytes]], dest: Path) -> list[Path]:
    """Write uploaded ``(name, bytes)`` files into a fresh sub-folder of ``dest``; names are sanitised."""
    if not files:
        raise ConfigError("choose one or more files to upload")
    folder = dest / time.strftime("%Y%m%d-%H%M%S")
    n = 0
    while folder.exists():
        n += 1
        folder = dest / f"{time.strftime('%Y%m%d-%H%M%S')}-{n}"
    folder.mkdir(parents=True)
    out: list[Path] = []
    for name, data in files:
        safe = re.sub(r"[^\w.\-]+", "_", Path(name).name).lstrip(".") or "file"
        path = folder / safe
        stem, suffix, i = path.stem, path.suffix, 1
        while path.exists():
            path = folder / f"{stem}-{i}{suffix}"
            i += 1
        path.write_bytes(data)
        out.append(path)
    return out
