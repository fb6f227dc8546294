"""The one wiring of mmrag's front doors: open the store, resolve the model set, build the retriever.

The CLI, the REST API, the Streamlit app and LangChain users all need the same three steps, and
each used to carry its own copy (the app's dropped the tenancy and cluster settings). They now call
these functions, so a new setting reaches every face at once:

* :func:`open_store`: the store from :class:`~mmrag.config.Settings` (location, collection, API key,
  tenancy, shards, replication);
* :func:`encoder_spec` / :func:`load_encoder`: the configured model, else the model the store was
  built with, else ``lite``; loaded once per process (:func:`mmrag.encoders.cached_encoder`);
* :func:`load_reranker`: the configured cross-encoder, or ``None`` (no rerank stage);
* :func:`build_retriever`: a :class:`~mmrag.retriever.Retriever` over a :class:`LoadedModels`.

Heavy imports (torch, transformers) happen inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mmrag.config import DEFAULT_MODEL, Settings

if TYPE_CHECKING:
    from mmrag.encoders.base import DualEncoder
    from mmrag.retriever import Retriever
    from mmrag.retriever.base import Reranker
    from mmrag.store import QdrantStore

__all__ = [
    "LoadedModels",
    "build_retriever",
    "encoder_spec",
    "load_encoder",
    "load_reranker",
    "open_store",
    "resolve_models",
]


def open_store(settings: Settings) -> QdrantStore:
    """Open (or create) the store ``settings`` name, with its tenancy and cluster settings.

    Example:
        >>> with open_store(Settings(store="/tmp/mmrag-doc")) as store:  # doctest: +SKIP
        ...     store.count()
    """
    from mmrag.store import QdrantStore

    return QdrantStore.open(
        settings.store,
        collection=settings.collection,
        api_key=settings.api_key,
        tenancy=settings.tenancy,
        # 0 means "the server's default", which QdrantStore spells None
        shards=settings.shards or None,
        replication=settings.replication or None,
    )


def encoder_spec(settings: Settings, store: QdrantStore | None = None) -> str:
    """The configured model, else the model ``store`` was built with, else ``lite``."""
    return settings.model or (store.default_spec if store is not None else None) or DEFAULT_MODEL


def load_encoder(settings: Settings, store: QdrantStore | None = None) -> DualEncoder:
    """The encoder :func:`encoder_spec` names, loaded once per process (loading takes seconds)."""
    from mmrag.encoders import cached_encoder

    return cached_encoder(
        encoder_spec(settings, store), batch_size=settings.batch_size, threads=settings.threads
    )


def load_reranker(
    settings: Settings, *, max_length: int | None = None, int8: bool = False
) -> Reranker | None:
    """The cross-encoder ``settings.reranker`` names, or ``None`` when none is configured.

    With the default ``max_length`` and no ``int8`` it is loaded once per process and shared
    (:func:`mmrag.rerank.cached_reranker`); other options load a model of their own.
    """
    if not settings.reranker:
        return None
    if max_length is None and not int8:
        from mmrag.rerank import cached_reranker

        return cached_reranker(settings.reranker, settings.threads)
    from mmrag.rerank import CrossEncoderReranker

    return CrossEncoderReranker(
        settings.reranker, max_length=max_length, int8=int8, threads=settings.threads or None
    )


@dataclass(frozen=True, slots=True)
class LoadedModels:
    """The models one retriever runs: the dense encoder and the optional reranker.

    Attributes:
        encoder: The dual encoder whose vectors the store holds (or will hold).
        reranker: The second stage, ``None`` for none.

    Example:
        >>> models = resolve_models(Settings(), store)  # doctest: +SKIP
        >>> models.encoder.id, models.reranker is None  # doctest: +SKIP
        ('lite-untrained-v1', True)
    """

    encoder: DualEncoder
    reranker: Reranker | None = None


def resolve_models(
    settings: Settings,
    store: QdrantStore | None = None,
    *,
    encoder: DualEncoder | None = None,
    reranker: Reranker | None = None,
) -> LoadedModels:
    """The model set for ``store``: injected models win, else the ones ``settings`` resolve to."""
    return LoadedModels(
        encoder=encoder if encoder is not None else load_encoder(settings, store),
        reranker=reranker if reranker is not None else load_reranker(settings),
    )


def build_retriever(models: LoadedModels, store: QdrantStore, **options: Any) -> Retriever:
    """A :class:`~mmrag.retriever.Retriever` over ``store`` with ``models``.

    ``options`` are the retriever's keyword arguments (``pool``, ``hnsw_ef``, ``hybrid``, ``fusion``,
    ``rrf_k``, ``dense_pool``, ``sparse_pool``, ``rerank``, ``vector``).
    """
    from mmrag.retriever import Retriever

    return Retriever(models.encoder, store, reranker=models.reranker, **options)
