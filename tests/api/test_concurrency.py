"""One process, one Edge store: searches run while an ingest writes, with no errors and no lost points."""

from __future__ import annotations

import threading
from pathlib import Path

from mmrag.api.config import ApiConfig
from mmrag.api.service import Principal, Service
from mmrag.config import Settings
from tests.fakes import HashEncoder


def test_searches_during_ingest_on_edge(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(60):
        (docs / f"d{i:02d}.txt").write_text(f"document {i} about topic{i % 7} and word{i}")
    svc = Service(Settings(store=str(tmp_path / "store"), batch_size=4), ApiConfig(), encoder=HashEncoder())
    errors: list[BaseException] = []
    done = threading.Event()
    searches = [0]

    def search_loop() -> None:
        while not done.is_set():
            try:
                svc.search(
                    Principal(),
                    query="topic3 word",
                    image=None,
                    k=5,
                    pool=None,
                    modality=None,
                    source=None,
                    filters=None,
                    tenant=None,
                    hybrid=None,
                    rerank=None,
                )
                svc.stats(Principal(), None)
                searches[0] += 1
            except BaseException as exc:  # noqa: BLE001 - any error is the failure this test looks for
                errors.append(exc)
                return

    threads = [threading.Thread(target=search_loop) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        summary = svc.ingest(Principal(), tenant=None, files=[], paths=[docs])  # batches of 4 + optimize
    finally:
        done.set()
        for t in threads:
            t.join(timeout=60)
    assert errors == []
    assert summary["written"] == 60 and searches[0] > 0
    ids = [r.id for r in svc.store.iter_records()]
    assert len(ids) == len(set(ids)) == svc.store.count() == 60
    svc.close()
