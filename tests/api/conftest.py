"""API fixtures: the real app served by uvicorn on 127.0.0.1 (a free port) in a thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("fastapi", reason="the api extra is not installed")
uvicorn = pytest.importorskip("uvicorn", reason="the api extra is not installed")

from mmrag.api.app import build_app  # noqa: E402
from mmrag.api.config import ApiConfig  # noqa: E402
from mmrag.config import Settings  # noqa: E402
from tests.fakes import HashEncoder  # noqa: E402


def png(colour: tuple[int, int, int]) -> bytes:
    """A 16 x 16 PNG of one colour: an image to ingest or to query with."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buf, format="PNG")
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run ``app`` with uvicorn on loopback until the block ends; yields the base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


DOCS = {
    "dual.txt": "dense passage retrieval with dual encoders embeds queries and passages",
    "cats.txt": "cats sleep on warm windows all afternoon",
    "qdrant.md": "# Qdrant\n\nqdrant is a vector database with payload indexes",
}


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    root = tmp_path / "root" / "docs"
    root.mkdir(parents=True)
    for name, text in DOCS.items():
        (root / name).write_text(text)
    return root


AppFactory = Callable[..., Any]


@pytest.fixture
def make_app(tmp_path: Path) -> AppFactory:
    def make(tenancy: bool = False, encoder: Any = None, store: str | None = None, **config: Any) -> Any:
        settings = Settings(store=store or str(tmp_path / "store"), tenancy=tenancy)
        if store is not None:  # a server store: uploads go to a folder of the test's own
            config.setdefault("upload_dir", tmp_path / "uploads")
        return build_app(settings, ApiConfig(**config), encoder=encoder or HashEncoder())

    return make


@pytest.fixture
def client_for() -> Callable[[str], httpx.Client]:
    def make(url: str, key: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=url, headers={"X-API-Key": key} if key else {}, timeout=30)

    return make
