"""Streamlit app (extra ``ui``). Not implemented yet: tracked by the Streamlit issue."""
