"""The one wiring of mmrag's front doors: open the store, resolve the model set, build the retriever.

The CLI, the REST API, the Streamlit app and LangChain users all need the same three steps, and
each used to carry its own copy (the app's dropped the tenancy and cluster settings). They now call
these functions, so a new setting reaches every face at once:

* :func:`open_store`: the store from :class:`~mmrag.config.Settings` (location, collection, API key,
  tenancy, shards, replication);
* :func:`encoder_spec` / :func:`load_encoder`: the configured model, else the model the store was
  built with, else ``lite``; loaded once per process (:func:`mmrag.encoders.cached_encoder`);
  :func:`load_query_encoder` for a one-off text query: the stored text tower when there is one
  (:mod:`mmrag.encoders.query_tower`, no torch), else the full encoder, whose tower it then stores;
* :func:`reranker_spec` / :func:`load_reranker`: the configured cross-encoder, else the one the store
  records as its default (its model set), else ``None`` (no rerank stage);
* :func:`build_retriever`: a :class:`~mmrag.retriever.Retriever` over a :class:`LoadedModels`, with the
  model set's stages on by default.

Heavy imports (torch, transformers) happen inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmrag.config import DEFAULT_MODEL, Settings
from mmrag.errors import EncoderError
from mmrag.types import RerankerSpec

if TYPE_CHECKING:
    from mmrag.encoders.base import DualEncoder
    from mmrag.retriever import Retriever
    from mmrag.retriever.base import Reranker
    from mmrag.store import QdrantStore

log = logging.getLogger(__name__)

__all__ = [
    "LoadedModels",
    "build_retriever",
    "encoder_spec",
    "load_encoder",
    "load_reranker",
    "load_reranker_spec",
    "model_ref",
    "open_store",
    "pipeline_note",
    "reranker_spec",
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
        search_threads=settings.edge_search_threads,
    )


def encoder_spec(settings: Settings, store: QdrantStore | None = None) -> str:
    """The configured model, else the model ``store`` was built with, else ``lite``."""
    return settings.model or (store.default_spec if store is not None else None) or DEFAULT_MODEL


def load_encoder(settings: Settings, store: QdrantStore | None = None) -> DualEncoder:
    """The encoder :func:`encoder_spec` names, loaded once per process (loading takes seconds)."""
    from mmrag.encoders import cached_encoder

    return cached_encoder(
        encoder_spec(settings, store),
        batch_size=settings.batch_size,
        threads=settings.threads,
        runtime=settings.runtime,
        text_precision=settings.text_precision,
    )


def load_query_encoder(settings: Settings, store: QdrantStore | None = None) -> DualEncoder:
    """The encoder for one process's text queries (``mmrag search``): the text tower
    :func:`remember_text_tower` stored on an earlier run, which starts in well under a second
    without torch; else :func:`load_encoder`'s full encoder, whose tower is then stored. With
    ``MMRAG_RUNTIME=torch`` the full encoder runs, as asked."""
    if settings.runtime != "torch":
        from mmrag.encoders.query_tower import open_tower

        tower = open_tower(
            encoder_spec(settings, store),
            threads=settings.threads,
            full=lambda: load_encoder(settings, store),
        )
        if tower is not None:
            return tower
    encoder = load_encoder(settings, store)
    remember_text_tower(encoder)
    return encoder


def remember_text_tower(encoder: DualEncoder) -> None:
    """Store ``encoder``'s text tower for later processes' text queries (:mod:`mmrag.encoders.query_tower`;
    a no-op when stored already, not cacheable, or ``MMRAG_QUERY_CACHE=off``)."""
    from mmrag.encoders.query_tower import remember

    remember(encoder)


def reranker_spec(
    settings: Settings,
    store: QdrantStore | None = None,
    *,
    max_length: int | None = None,
    int8: bool | None = None,
) -> RerankerSpec | None:
    """The second stage to run: ``settings.reranker`` (``--reranker`` / ``MMRAG_RERANKER``) wins over
    the reranker ``store`` records as its default; ``max_length`` / ``int8`` override either's."""
    recorded = store.meta.model_set().reranker if store is not None else None
    spec = recorded
    if settings.reranker and (recorded is None or model_ref(settings.reranker) != recorded.model):
        spec = RerankerSpec(settings.reranker)
    if spec is None:
        return None
    return replace(
        spec,
        max_length=max_length or spec.max_length,
        int8=spec.int8 if int8 is None else int8,
    )


def model_ref(name: str) -> str:
    """A model name as a store records it: a local folder by its absolute path (so the store works
    from any working directory), anything else (a hub name) as given."""
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def load_reranker(
    settings: Settings,
    store: QdrantStore | None = None,
    *,
    max_length: int | None = None,
    int8: bool | None = None,
) -> Reranker | None:
    """The cross-encoder :func:`reranker_spec` names (loaded once per process and options), or ``None``.

    A configured reranker that cannot be loaded is an error; a store's recorded default that cannot
    be loaded here (a checkpoint path from another machine) is logged and the first stage runs alone.
    """
    spec = reranker_spec(settings, store, max_length=max_length, int8=int8)
    return None if spec is None else _loaded(spec, settings)


def _loaded(spec: RerankerSpec, settings: Settings) -> Reranker | None:
    """:func:`load_reranker_spec` for ``settings``: an error when the user configured the reranker,
    a warning and ``None`` when it is the store's recorded default."""
    try:
        return load_reranker_spec(spec, settings.threads, settings.rerank_precision)
    except EncoderError as exc:
        if settings.reranker:
            raise
        log.warning("the store's default reranker cannot be loaded, so the first stage runs alone: %s", exc)
        return None


def load_query_reranker(
    settings: Settings,
    store: QdrantStore | None = None,
    *,
    max_length: int | None = None,
    int8: bool | None = None,
) -> Reranker | None:
    """:func:`load_reranker` for one process's searches (``mmrag search``): the cross-encoder
    :func:`remember_reranker` stored as ONNX on an earlier run (fp32, no torch) when there is one and
    the settings allow it (``MMRAG_RERANK_PRECISION`` ``auto`` or ``fp32``, not int8, not
    ``MMRAG_RUNTIME=torch``); else the full reranker, which is then stored."""
    spec = reranker_spec(settings, store, max_length=max_length, int8=int8)
    if spec is None:
        return None
    if not spec.int8 and settings.rerank_precision in ("auto", "fp32") and settings.runtime != "torch":
        from mmrag.rerank.stored import open_stored_reranker

        stored = open_stored_reranker(
            spec.model,
            threads=settings.threads,
            max_length=spec.max_length,
            fusion_weights=spec.fusion_weights,
        )
        if stored is not None:
            return stored
    reranker = _loaded(spec, settings)
    if reranker is not None:
        remember_reranker(reranker)
    return reranker


def remember_reranker(reranker: Reranker) -> None:
    """Store ``reranker`` for later processes' searches (:mod:`mmrag.rerank.stored`; a no-op when
    stored already, not storable, or ``MMRAG_QUERY_CACHE=off``)."""
    from mmrag.rerank.stored import remember_reranker as remember

    remember(reranker)


def load_reranker_spec(spec: RerankerSpec, threads: int = 0, precision: str = "auto") -> Reranker:
    """The cross-encoder ``spec`` describes, loaded once per process and options."""
    from mmrag.rerank import cached_reranker

    return cached_reranker(
        spec.model,
        threads,
        max_length=spec.max_length,
        int8=spec.int8,
        fusion_weights=spec.fusion_weights,
        precision=precision,
    )


def pipeline_note(models: LoadedModels, store: QdrantStore) -> str | None:
    """One line for the user when the default pipeline is the first stage only, saying why."""
    if models.reranker is not None:
        return None
    if reranker_spec(Settings(), store) is not None:
        return "the store's default reranker could not be loaded; showing the first stage only"
    return (
        "this store has no default reranker, so results are the first stage only; "
        "set one with `mmrag model-set --reranker MODEL` (e.g. a `mmrag train-reranker` checkpoint)"
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
    warm: bool = False,
) -> LoadedModels:
    """The model set for ``store``: injected models win, else the ones ``settings`` resolve to.

    ``warm`` (long-lived servers): build and check the encoder's text paths now, so no first request
    pays for them (:mod:`mmrag.encoders.warmup`).
    """
    models = LoadedModels(
        encoder=encoder if encoder is not None else load_encoder(settings, store),
        reranker=reranker if reranker is not None else load_reranker(settings, store),
    )
    if warm:
        from mmrag.encoders.warmup import warm_encoder

        warm_encoder(models.encoder)
    return models


def build_retriever(models: LoadedModels, store: QdrantStore, **options: Any) -> Retriever:
    """A :class:`~mmrag.retriever.Retriever` over ``store`` with ``models``, running the store's model
    set by default: hybrid where the store has BM25 vectors (unless its model set turns it off), and
    rerank whenever ``models`` has a reranker.

    ``options`` are the retriever's keyword arguments (``pool``, ``hnsw_ef``, ``hybrid``, ``fusion``,
    ``rrf_k``, ``dense_pool``, ``sparse_pool``, ``rerank``, ``vector``); ``hybrid=None`` means the
    model set's choice.
    """
    from mmrag.retriever import Retriever

    if options.get("hybrid") is None:
        options["hybrid"] = store.meta.model_set().hybrid
    retriever = Retriever(models.encoder, store, reranker=models.reranker, **options)
    if retriever.hybrid:
        _check_calibration(models.reranker, retriever.fusion)
    return retriever


_MISMATCHES_SEEN: set[tuple[str, str]] = set()  # (reranker, fusion) pairs already warned about


def _check_calibration(reranker: Reranker | None, fusion: str) -> None:
    """Warn (once per reranker and fusion: the app builds a retriever per search) when a checkpoint's
    fusion weight was learned behind another first-stage fusion (RRF before DBSF became the default):
    it still runs, but on another score scale, so its weight may no longer be the best one."""
    calibrated = str((getattr(reranker, "meta", None) or {}).get("first_stage", ""))
    words = calibrated.split()
    if len(words) < 2 or words[0] != "hybrid" or words[1] == fusion:
        return
    key = (str(getattr(reranker, "id", reranker)), fusion)
    if key in _MISMATCHES_SEEN:
        return
    _MISMATCHES_SEEN.add(key)
    log.warning(
        "reranker %s was calibrated behind %s, but this search fuses with %s: retrain it "
        "(mmrag train-reranker), or in the CLI search with --fusion %s",
        key[0], calibrated.split(" (")[0], fusion, words[1],
    )  # fmt: skip
