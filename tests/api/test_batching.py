"""The API's micro-batcher (issue #16): concurrent clients get the hits they get alone, a full
queue is a fast 503 with Retry-After, and the settings come from the environment."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from mmrag.api.config import ApiConfig
from mmrag.errors import ConfigError
from tests.api.conftest import AppFactory, serve
from tests.fakes import HashEncoder
from tests.waiting import wait_until

WORDS = [
    "dense",
    "passage",
    "retrieval",
    "cats",
    "sleep",
    "warm",
    "windows",
    "qdrant",
    "vector",
    "database",
    "payload",
    "indexes",
]


class HoldingEncoder(HashEncoder):
    """Text calls that contain the word ``hold`` wait until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.holding = threading.Event()

    def encode_text(self, texts: Any, *, batch_size: int | None = None) -> Any:
        if any("hold" in t.split() for t in texts):
            self.holding.set()
            assert self.release.wait(60)
        return super().encode_text(texts, batch_size=batch_size)


def ingest(c: httpx.Client) -> None:
    files = [
        ("files", (f"{w}.txt", f"{w} {WORDS[(i + 3) % len(WORDS)]} notes".encode(), "text/plain"))
        for i, w in enumerate(WORDS)
    ]
    assert c.post("/ingest", files=files).status_code == 200


def test_full_queue_answers_503_with_retry_after(make_app: AppFactory, client_for: Any) -> None:
    enc = HoldingEncoder()
    app = make_app(encoder=enc, queue_size=1, batch_max=1)
    with serve(app) as url, client_for(url) as c, ThreadPoolExecutor(1) as pool:
        ingest(c)
        held = pool.submit(c.post, "/search", data={"query": "hold cats"})
        assert enc.holding.wait(60)
        assert app.state.service.batcher.admitted == 1
        r = c.post("/search", data={"query": "cats"})  # the queue (1) is full: refused, not queued
        assert r.status_code == 503 and r.headers["Retry-After"] == "1"
        assert "queued" in r.json()["error"]
        assert c.get("/health").json()["batching"]["admitted"] == 1
        enc.release.set()
        assert held.result(60).status_code == 200
        wait_until(lambda: app.state.service.batcher.admitted == 0, "the held search is released")
        assert c.post("/search", data={"query": "cats"}).status_code == 200


def test_concurrent_clients_get_their_own_hits(make_app: AppFactory, client_for: Any) -> None:
    app = make_app(batch_max=8, batch_wait_ms=20)
    queries = [f"{WORDS[i % len(WORDS)]} {WORDS[(i * 5) % len(WORDS)]}" for i in range(24)]
    with serve(app) as url, client_for(url) as c:
        ingest(c)
        forms = [
            {"query": q, "k": str(1 + i % 4), "mode": ("dense", "hybrid")[i % 2]}
            for i, q in enumerate(queries)
        ]
        alone = [c.post("/search", data=f).json()["hits"] for f in forms]
        before = c.get("/health").json()["batching"]

        def one(form: dict[str, str]) -> Any:
            with client_for(url) as own:
                r = own.post("/search", data=form)
                assert r.status_code == 200, r.text
                return r.json()["hits"]

        with ThreadPoolExecutor(len(forms)) as pool:
            together = list(pool.map(one, forms))
        stats = c.get("/health").json()["batching"]
    for a, b in zip(alone, together, strict=True):
        assert [h["id"] for h in a] == [h["id"] for h in b]
        for ha, hb in zip(a, b, strict=True):
            for name, score in ha["scores"].items():
                assert (score is None) == (hb["scores"][name] is None)
                if score is not None:
                    assert hb["scores"][name] == pytest.approx(score, abs=1e-5)
    assert stats["encode_calls"] - before["encode_calls"] == len(forms)  # every search encoded once
    assert stats["admitted"] == 0 and stats["max_batch"] == 8


def test_batching_settings_from_env() -> None:
    cfg = ApiConfig.from_env({"MMRAG_BATCH_MAX": "8", "MMRAG_BATCH_WAIT_MS": "0", "MMRAG_QUEUE_SIZE": "16"})
    assert (cfg.batch_max, cfg.batch_wait_ms, cfg.queue_size) == (8, 0.0, 16)
    assert cfg.batching.max_batch == 8 and cfg.batching.queue_size == 16
    d = ApiConfig.from_env({})
    assert (d.batch_max, d.batch_wait_ms, d.queue_size) == (32, 5.0, 256)
    assert d.batching.max_queue_wait_s == d.search_timeout_s / 2  # refused before it would time out
    assert ApiConfig.from_env({"MMRAG_QUEUE_WAIT": "3"}).batching.max_queue_wait_s == 3.0
    assert d.batching.rerank_pairs == 32
    assert ApiConfig.from_env({"MMRAG_RERANK_BATCH_PAIRS": "100"}).batching.rerank_pairs == 100
    with pytest.raises(ConfigError, match="MMRAG_BATCH_WAIT_MS"):
        ApiConfig.from_env({"MMRAG_BATCH_WAIT_MS": "-1"})
    with pytest.raises(ConfigError, match="MMRAG_QUEUE_SIZE"):
        ApiConfig.from_env({"MMRAG_QUEUE_SIZE": "0"})
    with pytest.raises(ConfigError, match="max_wait_ms"):
        _ = ApiConfig(batch_wait_ms=5000).batching
