"""The collection page: what the store holds (by modality, source, tenant; vectors) and an ingest form."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from mmrag.config import Settings
from mmrag.ingest import IngestOptions, IngestRunner
from mmrag.types import IngestSummary
from mmrag.ui.common import encoder_for
from mmrag.ui.service import (
    allowed_roots,
    common_root,
    facet,
    open_store,
    resolve_ingest_folder,
    save_uploads,
    short_source,
    uploads_dir,
)


def render(settings: Settings) -> None:
    st.title("Collection")
    # Drawn after the ingest form has run (if it was submitted), so the counts include what it wrote.
    stats_box = st.container()
    st.divider()
    _ingest(settings)
    with stats_box:
        _stats(settings)


def _stats(settings: Settings) -> None:
    with open_store(settings) as store:
        stats = store.stats()
        sources = facet(store, "source")
        tenants = facet(store, "tenant")
    st.caption(f"store `{stats['location']}`")
    if not stats["points"]:
        st.info("The store is empty. Ingest a folder or upload files below.", icon="📭")
    m = st.columns(4)
    m[0].metric("points", stats["points"])
    m[1].metric("text chunks", stats["by_modality"].get("text", 0))
    m[2].metric("images", stats["by_modality"].get("image", 0))
    m[3].metric("sources", stats["sources"])
    st.markdown("##### Encoders and vectors")
    vectors = [
        {
            "vector": name,
            "default": name == stats["default_vector"],
            "encoder id": v.get("encoder_id"),
            "model spec": v.get("spec"),
            "dim": v.get("dim"),
            "aligned": v.get("aligned"),
        }
        for name, v in stats["vectors"].items()
    ]
    if vectors:
        st.dataframe(vectors, hide_index=True, width="stretch")
        st.caption(
            f"default vector: `{stats['default_vector']}` · points in an HNSW index: "
            f"{stats['indexed_vectors']} (0 means Qdrant scans exactly: small collections)"
        )
    else:
        st.caption("no vectors yet: the first ingest creates the encoder's vector")
    root = common_root(list(sources))
    if sources:
        st.markdown("##### Chunks by source" + (f" (under `{root}`)" if root else ""))
        rows = [{"source": short_source(s, root), "chunks": n} for s, n in sources.items()]
        st.dataframe(rows, hide_index=True, width="stretch", height=min(400, 38 + 35 * len(rows)))
    if tenants:
        st.markdown("##### Chunks by tenant")
        st.dataframe([{"tenant": t, "chunks": n} for t, n in tenants.items()], hide_index=True)


def _ingest(settings: Settings) -> None:
    st.subheader("Ingest")
    roots = allowed_roots(settings)
    folder_tab, upload_tab = st.tabs(["Folder on the server", "Upload files"])
    with folder_tab, st.form("ingest_folder"):
        raw = st.text_input(
            "Folder or file",
            key="ingest_path",
            help="a path inside: " + ", ".join(str(r) for r in roots),
            placeholder=str(roots[0]),
        )
        limit = int(st.number_input("at most N files (0 = all)", min_value=0, value=0, key="ingest_limit"))
        st.caption("allowed roots: " + ", ".join(f"`{r}`" for r in roots))
        go_folder = st.form_submit_button("Ingest folder")
    with upload_tab, st.form("ingest_upload", clear_on_submit=True):
        files = st.file_uploader("Files", accept_multiple_files=True, key="ingest_files")
        st.caption(f"uploads are kept in `{uploads_dir(settings)}` (image results point at them)")
        go_upload = st.form_submit_button("Upload and ingest")
    if go_folder:
        path = resolve_ingest_folder(raw, roots)
        _run(settings, [path], limit or None)
    elif go_upload:
        saved = save_uploads([(f.name, f.getvalue()) for f in files or []], uploads_dir(settings))
        _run(settings, [saved[0].parent], None)


def _run(settings: Settings, paths: list[Path], limit: int | None) -> None:
    bar = st.progress(0.0, text="reading files…")

    def on_progress(done: int, total: int) -> None:
        bar.progress(done / total if total else 1.0, text=f"{done} / {total} files")

    with open_store(settings) as store, st.spinner("embedding and writing…"):
        encoder = encoder_for(settings, store)
        runner = IngestRunner(encoder, store, IngestOptions(batch_size=settings.batch_size), progress=False)
        summary = runner.run(paths, limit=limit, on_progress=on_progress)
    bar.progress(1.0, text=f"done: {summary.files_seen} files")
    _summary(summary)


def _summary(summary: IngestSummary) -> None:
    d: dict[str, Any] = summary.to_dict()
    st.success(
        f"Ingested {summary.files_loaded} of {summary.files_seen} files: "
        f"{summary.chunks.get('text', 0)} text chunks, {summary.chunks.get('image', 0)} images; "
        f"embedded {summary.embedded}, written {summary.written} ({summary.already_stored} already stored) "
        f"in {summary.seconds:.1f} s.",
        icon="✅",
    )
    if summary.skipped:
        st.warning(
            "Skipped:\n" + "\n".join(f"- `{Path(s.path).name}`: {s.reason}" for s in summary.skipped),
            icon="⏭️",
        )
    with st.expander("ingest summary (JSON)"):
        st.json(d)
