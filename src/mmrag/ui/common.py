"""Streamlit helpers shared by the pages: the cached encoder and the friendly error boundary."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import streamlit as st

from mmrag import wiring
from mmrag.config import Settings
from mmrag.encoders import cached_encoder
from mmrag.errors import EncoderError, MmragError, StoreLockedError

if TYPE_CHECKING:
    from mmrag.encoders.base import DualEncoder
    from mmrag.store import QdrantStore
    from mmrag.types import RerankerSpec

log = logging.getLogger("mmrag.ui")


@st.cache_resource(show_spinner="Loading the encoder (once per server process)…", max_entries=2)
def get_encoder(
    spec: str, batch_size: int, threads: int, runtime: str = "auto", text_precision: str = "auto"
) -> DualEncoder:
    """One encoder per spec for every session of this server process (loading takes seconds).

    Failures are not cached, so a fixed model path works on the next run.
    """
    return cached_encoder(
        spec, batch_size=batch_size, threads=threads, runtime=runtime, text_precision=text_precision
    )


def encoder_for(settings: Settings, store: QdrantStore) -> DualEncoder:
    """The encoder for ``store``: the configured model, else the store's, else ``lite`` (as every face)."""
    return get_encoder(
        wiring.encoder_spec(settings, store),
        settings.batch_size,
        settings.threads,
        settings.runtime,
        settings.text_precision,
    )


@st.cache_resource(show_spinner="Loading the reranker (once per server process)…", max_entries=2)
def _get_reranker(spec: RerankerSpec, threads: int, precision: str = "auto") -> Any:
    return wiring.load_reranker_spec(spec, threads, precision)


def reranker_for(settings: Settings, store: QdrantStore) -> Any:
    """The configured cross-encoder (``--reranker`` / ``MMRAG_RERANKER``), else the store's default
    reranker, else ``None`` (the rerank toggle then says why it is off). A store's default that cannot
    be loaded here is logged and leaves the first stage alone, as in the other faces."""
    spec = wiring.reranker_spec(settings, store)
    if spec is None:
        return None
    try:
        return _get_reranker(spec, settings.threads, settings.rerank_precision)
    except EncoderError:
        if settings.reranker:
            raise
        log.warning("the store's default reranker %s cannot be loaded; first stage only", spec.model)
        return None


def guarded(render: Callable[[Settings], None], settings: Settings) -> None:
    """Run one page; mmrag's own errors become messages, anything else a short error (no traceback).

    Streamlit's rerun/stop signals derive from ``BaseException`` and pass through untouched.
    """
    try:
        render(settings)
    except StoreLockedError as exc:
        st.error(
            f"**The store is locked by another process.** {exc}. "
            "Finish or stop that process (for example a running `mmrag ingest`) and reload this page.",
            icon="🔒",
        )
    except EncoderError as exc:
        st.error(
            f"**The encoder could not be loaded.** {exc}. Start the app with a valid `--model` "
            "(or `MMRAG_MODEL`): `lite`, a checkpoint directory, `openclip:ARCH/TAG` or `hf-hub:REPO`.",
            icon="🧩",
        )
    except MmragError as exc:
        st.error(str(exc), icon="⚠️")
    except Exception as exc:
        log.exception("unexpected error in the mmrag UI")
        st.error(
            f"Unexpected error ({type(exc).__name__}: {exc}). The details are in the server log.", icon="💥"
        )


def image_exists(path: str | None) -> bool:
    return bool(path) and Path(str(path)).is_file()
