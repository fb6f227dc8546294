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

log = logging.getLogger("mmrag.ui")


@st.cache_resource(show_spinner="Loading the encoder (once per server process)…", max_entries=2)
def get_encoder(spec: str, batch_size: int, threads: int) -> DualEncoder:
    """One encoder per spec for every session of this server process (loading takes seconds).

    Failures are not cached, so a fixed model path works on the next run.
    """
    return cached_encoder(spec, batch_size=batch_size, threads=threads)


def encoder_for(settings: Settings, store: QdrantStore) -> DualEncoder:
    """The encoder for ``store``: the configured model, else the store's, else ``lite`` (as every face)."""
    return get_encoder(wiring.encoder_spec(settings, store), settings.batch_size, settings.threads)


@st.cache_resource(show_spinner="Loading the reranker (once per server process)…", max_entries=2)
def _get_reranker(spec: str, threads: int) -> Any:
    from mmrag.rerank import cached_reranker

    return cached_reranker(spec, threads)


def reranker_for(settings: Settings) -> Any:
    """The configured cross-encoder, or ``None`` (the rerank toggle then says why it is off)."""
    return _get_reranker(settings.reranker, settings.threads) if settings.reranker else None


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
