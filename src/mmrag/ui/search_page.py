"""The search page: a text and/or image query, filters and stage switches, result cards, pool chart."""

from __future__ import annotations

from typing import Any

import altair as alt
import streamlit as st

from mmrag.config import Settings
from mmrag.retriever.request import MAX_EXPAND
from mmrag.store import QdrantStore
from mmrag.types import Hit
from mmrag.ui.common import encoder_for, image_exists, reranker_for
from mmrag.ui.service import (
    SCORES,
    QueryOutcome,
    QueryRequest,
    build_retriever,
    capability_notes,
    common_root,
    display_meta,
    facet,
    fmt_score,
    highlight,
    load_query_image,
    neighbours,
    open_store,
    rank_shift,
    run_query,
    short_source,
)

IMAGE_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "gif"]
SNIPPET_CHARS = 700
MAX_SOURCE_OPTIONS = 1000  # a store of thousands of photos has one source per photo


def render(settings: Settings) -> None:
    st.title("Search")
    with open_store(settings) as store:
        if store.count() == 0:
            st.info(
                f"The store at `{store.location}` is empty: nothing to search yet. Ingest a folder or upload "
                "files on the **Collection** page (or run `mmrag ingest PATH`).",
                icon="📭",
            )
            return
        encoder = encoder_for(settings, store)
        reranker = reranker_for(settings, store)
        default = build_retriever(encoder, store, reranker=reranker)
        caps = default.capabilities
        # The toggles start as the store's model set runs: hybrid where it has BM25, rerank with a reranker.
        st.session_state.setdefault("hybrid", default.hybrid and caps["hybrid"])
        st.session_state.setdefault("rerank", default.rerank and caps["rerank"])
        sources = facet(store, "source", limit=MAX_SOURCE_OPTIONS)
        tenants = facet(store, "tenant", limit=MAX_SOURCE_OPTIONS)
        root = common_root(list(sources))
        req = _form(caps, sources, tenants, root)
        if req is not None:
            outcome = run_query(build_retriever(encoder, store, pool=req.pool, reranker=reranker), req)
            st.session_state["outcome"] = outcome
            st.session_state["inspect"] = None
        shown = st.session_state.get("outcome")
        if isinstance(shown, QueryOutcome):
            _results(shown, store, root)


def _form(
    caps: dict[str, bool], sources: dict[str, int], tenants: dict[str, int], root: str | None
) -> QueryRequest | None:
    notes = capability_notes(caps)
    with st.form("search"):
        left, right = st.columns([3, 2])
        text = left.text_input("Text query", key="q", placeholder="e.g. dense passage retrieval")
        upload = right.file_uploader("Image query", type=IMAGE_TYPES, key="qimg")
        c1, c2, c3 = st.columns(3)
        k = int(c1.number_input("k (results shown)", min_value=1, max_value=200, value=10, key="k"))
        pool = int(
            c2.number_input("pool (ANN candidates)", min_value=1, max_value=2000, value=50, key="pool")
        )
        modality = c3.selectbox("Modality", ["any", "text", "image"], key="modality")
        f1, f2 = st.columns(2)
        chosen_sources = f1.multiselect(
            "Source",
            list(sources),
            key="sources",
            format_func=lambda s: f"{short_source(s, root)} ({sources[s]})",
            placeholder="all sources",
        )
        chosen_tenants = f2.multiselect(
            "Tenant",
            list(tenants),
            key="tenants",
            disabled=not tenants,
            placeholder="all tenants" if tenants else "no chunks carry a tenant",
        )
        s1, s2 = st.columns(2)
        hybrid = s1.toggle(
            "Hybrid (dense + BM25)", key="hybrid", disabled=not caps.get("hybrid"), help=notes.get("hybrid")
        )
        rerank = s2.toggle(
            "Rerank (cross-encoder)", key="rerank", disabled=not caps.get("rerank"), help=notes.get("rerank")
        )
        for stage, col in (("hybrid", s1), ("rerank", s2)):
            if stage in notes:
                col.caption(notes[stage])
        shaping = _result_controls()
        submitted = st.form_submit_button("Search", type="primary")
    if not submitted:
        return None
    image = load_query_image(upload.getvalue(), upload.name) if upload is not None else None
    return QueryRequest(
        text=text or None,
        image=image,
        k=k,
        pool=max(pool, k),
        modality=None if modality == "any" else modality,
        sources=chosen_sources,
        tenants=chosen_tenants,
        hybrid=bool(hybrid and caps.get("hybrid")),
        rerank=bool(rerank and caps.get("rerank")),
        **shaping,
    )


def _result_controls() -> dict[str, Any]:
    """Grouping by document, context, MMR and the composed query's image weight (docs/search.md)."""
    with st.expander("Documents, context, diversity"):
        g1, g2, g3, g4 = st.columns(4)
        by_doc = g1.toggle("Group by document", key="group", help="k counts documents, not chunks")
        size = g1.number_input("hits per document", min_value=1, max_value=20, value=1, key="group_size")
        expand = g2.number_input(
            "context (chunks per side)", min_value=0, max_value=MAX_EXPAND, value=0, key="expand"
        )
        use_mmr = g3.toggle("Diversify (MMR)", key="mmr_on", help="maximal marginal relevance over the pool")
        lam = g3.slider("MMR λ (1 = relevance only)", 0.0, 1.0, 0.5, 0.05, key="mmr")
        weight = g4.slider("image weight (text + image)", 0.0, 1.0, 0.5, 0.05, key="image_weight")
    return {
        "group_by": "source" if by_doc else None,
        "group_size": int(size) if by_doc else 1,
        "expand": int(expand),
        "mmr_lambda": float(lam) if use_mmr else None,
        "image_weight": float(weight),
    }


def _results(outcome: QueryOutcome, store: QdrantStore, root: str | None) -> None:
    for note in outcome.notes:
        st.warning(note, icon="ℹ️")
    cols = st.columns(len(outcome.timings) or 1)
    for col, (stage, secs) in zip(cols, outcome.timings.items(), strict=False):
        col.metric(f"{stage} (ms)", f"{secs * 1000:.1f}")
    if not outcome.pool:
        st.info(
            "No results. "
            + (
                "Nothing matches these filters: clear the source, tenant or modality filter."
                if outcome.filtered
                else "The store returned no candidates for this query."
            ),
            icon="🔍",
        )
        return
    shown = outcome.shown
    st.subheader(f"Top {len(shown)} of {len(outcome.pool)} candidates")
    _pool_chart(outcome)
    for hit in shown:
        _card(hit, outcome.query_text, store, root)


def _pool_chart(outcome: QueryOutcome) -> None:
    available = [s for s in SCORES if any(getattr(h, s) is not None for h in outcome.pool)]
    score = st.radio(
        "Score distribution of the candidate pool",
        available,
        index=len(available) - 1,  # the last stage that ran orders the results
        horizontal=True,
        key="chart_score",
    )
    shown_label, rest_label = f"top {outcome.k} (shown)", "rest of the pool"
    rows: list[dict[str, Any]] = [
        {
            "rank": h.final_rank,
            "score": getattr(h, score),
            "set": shown_label if h.final_rank <= outcome.k else rest_label,
        }
        for h in outcome.pool
        if getattr(h, score) is not None
    ]
    data = alt.Data(values=rows)  # type: ignore[no-untyped-call]
    color = alt.Color(
        "set:N",
        scale=alt.Scale(domain=[shown_label, rest_label], range=["#d1495b", "#8d99ae"]),
        legend=alt.Legend(orient="top", title=None),
    )
    by_rank = (
        alt.Chart(data, title=f"{score} score by rank in the pool")
        .mark_bar()
        .encode(
            x=alt.X("rank:O", title="rank", axis=alt.Axis(labelOverlap=True)),
            y=alt.Y("score:Q", title=score),
            color=color,
            tooltip=["rank:O", "score:Q"],
        )
    )
    hist = (
        alt.Chart(data, title=f"{score} score histogram")
        .mark_bar()
        .encode(
            x=alt.X("score:Q", bin=alt.Bin(maxbins=20), title=score),
            y=alt.Y("count():Q", title="candidates", stack=True),
            color=color,
        )
    )
    left, right = st.columns(2)
    left.altair_chart(by_rank, width="stretch", height=260)
    right.altair_chart(hist, width="stretch", height=260)


def _scores_line(hit: Hit) -> str:
    scores = " · ".join(f"{s} **{fmt_score(getattr(hit, s))}**" for s in SCORES)
    return f"{scores} · rank {hit.ann_rank} → {hit.final_rank} **{rank_shift(hit)}**"


def _where(hit: Hit, root: str | None) -> str:
    page = hit.chunk.metadata.get("page")
    heading = hit.chunk.metadata.get("heading")
    where = f"`{short_source(hit.chunk.source, root)}`"
    if page:
        where += f" · page {page}"
    if heading:
        where += f" · {heading}"
    return where


def _card(hit: Hit, query: str | None, store: QdrantStore, root: str | None) -> None:
    c = hit.chunk
    with st.container(border=True):
        thumb, body = st.columns([1, 5]) if c.modality == "image" else (None, st.container())
        if thumb is not None:
            if image_exists(c.image):
                thumb.image(str(c.image), width="stretch")
            else:
                thumb.caption(f"image not found: {c.image}")
        body.markdown(f"**#{hit.final_rank}** · {c.modality} · {_where(hit, root)}")
        if c.text:
            body.markdown(highlight(c.text, query, SNIPPET_CHARS), unsafe_allow_html=True)
        body.markdown(_scores_line(hit))
        if hit.context:
            with body.expander(f"context: {len(hit.context)} chunks around it"):
                for n in hit.context:
                    page = n.metadata.get("page")
                    st.caption(
                        f"{n.modality} · position {n.metadata.get('position')}"
                        + (f" · page {page}" if page else "")
                    )
                    st.write((n.text or n.image or "")[:SNIPPET_CHARS])
        open_now = st.session_state.get("inspect") == c.id
        body.button(
            "Close" if open_now else "Inspect",
            key=f"inspect-{c.id}",
            on_click=_toggle_inspect,
            args=(c.id,),
        )
        if open_now:
            _inspector(hit, query, store, root)


def _toggle_inspect(chunk_id: str) -> None:
    st.session_state["inspect"] = None if st.session_state.get("inspect") == chunk_id else chunk_id


def _inspector(hit: Hit, query: str | None, store: QdrantStore, root: str | None) -> None:
    c = hit.chunk
    st.markdown("##### Whole chunk")
    if c.modality == "image" and image_exists(c.image):
        st.image(str(c.image))
    if c.text:
        st.markdown(highlight(c.text, query), unsafe_allow_html=True)
    before, after = neighbours(store, c)
    st.markdown(f"##### Neighbours in `{short_source(c.source, root)}`")
    if not before and not after:
        st.caption("no other chunks from this source")
    for label, group in (("before", before), ("after", after)):
        for n in group:
            pos = n.metadata.get("position")
            page = n.metadata.get("page")
            title = f"{label} · position {pos}" + (f" · page {page}" if page else "")
            with st.expander(title):
                if n.modality == "image" and image_exists(n.image):
                    st.image(str(n.image), width=200)
                st.write(n.text or n.image or "")
    st.markdown("##### Metadata")
    st.json(
        {
            "id": c.id,
            "modality": c.modality,
            "source": c.source,
            "image": c.image,
            "vector": hit.vector,
            "metadata": display_meta(c),
        },
        expanded=True,
    )
