"""REST API (FastAPI, extra ``api``). Not implemented yet: tracked by the interfaces issue."""
