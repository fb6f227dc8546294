"""Streamlit entry script: ``streamlit run <this file>`` (what ``mmrag ui`` starts).

Settings come from the ``MMRAG_*`` environment (the CLI turns its flags into it).
"""

from __future__ import annotations

import streamlit as st

from mmrag.config import Settings
from mmrag.errors import MmragError
from mmrag.ui import collection_page, search_page
from mmrag.ui.common import guarded

PAGES = {"Search": search_page.render, "Collection": collection_page.render}


def main() -> None:
    st.set_page_config(page_title="mmrag", page_icon="🔎", layout="wide")
    try:
        settings = Settings.from_env()
    except MmragError as exc:
        st.error(f"Invalid settings: {exc}")
        return
    st.sidebar.title("mmrag")
    page = st.sidebar.radio("Page", list(PAGES), key="page")
    st.sidebar.caption(f"store: `{settings.store}`  \nmodel: `{settings.model or 'the store default'}`")
    guarded(PAGES[str(page)], settings)


if __name__ == "__main__":
    main()
