"""A client that disconnects in the middle of ``POST /ingest`` (issue #18): the ingest runs to its
end on the server (it is not cut half-way), the next request finds every file stored, and the
ledger equals the store. Real uvicorn, real Edge store, fake encoder slowed down."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from mmrag.api.app import create_app
from mmrag.api.config import ApiConfig
from mmrag.api.service import Service
from mmrag.config import Settings
from mmrag.ingest.store_ledger import open_ledger
from mmrag.ingest.verify import verify
from tests.api.conftest import serve
from tests.fakes import HashEncoder


class SlowEncoder(HashEncoder):
    """Holds every embedding call until the test's client has given up, so the ingest is always
    still running when the client disconnects (a sleep raced with the client's timeout)."""

    def __init__(self) -> None:
        super().__init__()
        self.client_gone = threading.Event()

    def encode_text(self, texts: Sequence[str], *, batch_size: int | None = None) -> Any:
        self.client_gone.wait(timeout=30)
        return super().encode_text(texts, batch_size=batch_size)


def test_client_disconnect_mid_ingest_leaves_a_complete_store(tmp_path: Path) -> None:
    docs = tmp_path / "root" / "docs"
    docs.mkdir(parents=True)
    for i in range(30):
        (docs / f"doc-{i}.txt").write_text(f"document {i} about vectors and ledgers")
    encoder = SlowEncoder()
    svc = Service(
        Settings(store=str(tmp_path / "store")),
        ApiConfig(ingest_root=docs.parent, ingest_batch_size=2),
        encoder=encoder,
    )
    with serve(create_app(svc)) as url:
        try:
            httpx.post(f"{url}/ingest", data={"path": "docs"}, timeout=0.3)
            raise AssertionError("the ingest finished before the client gave up: nothing was tested")
        except httpx.ReadTimeout:
            pass  # the client hung up while the server was ingesting
        encoder.client_gone.set()
        deadline = time.monotonic() + 60
        while True:  # 409 while the first ingest still runs
            again = httpx.post(f"{url}/ingest", data={"path": "docs"}, timeout=30)
            if again.status_code != 409 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert again.status_code == 200, again.text
        body = again.json()
        assert body["files_seen"] == 30 and body["written"] == 0  # the first run stored every file
        with open_ledger(svc.store) as ledger:
            assert verify(svc.store, ledger).ok and svc.store.count() == body["already_stored"] == 30
    svc.close()
