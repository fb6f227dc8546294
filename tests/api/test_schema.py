"""Schemathesis fuzzes every operation of the OpenAPI schema over real HTTP: no 5xx allowed.

Bounded: a few examples per operation (positive and negative data), about 10-20 s in all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis (dev extra) is not installed")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from mmrag.api.app import build_app  # noqa: E402
from mmrag.api.config import ApiConfig  # noqa: E402
from mmrag.config import Settings  # noqa: E402
from tests.api.conftest import DOCS, serve  # noqa: E402
from tests.fakes import HashEncoder  # noqa: E402

KEY = "fuzz-admin"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    tmp = tmp_path_factory.mktemp("schema")
    root = tmp / "root"
    root.mkdir()
    for name, text in DOCS.items():
        (root / name).write_text(text)
    app = build_app(
        Settings(store=str(tmp / "store"), tenancy=True),
        ApiConfig(api_key=KEY, tenant_keys={"fuzz-acme": "acme"}, ingest_root=root, max_upload_mb=1),
        encoder=HashEncoder(),
    )
    with serve(app) as url:
        import httpx

        r = httpx.post(f"{url}/ingest", data={"path": ".", "tenant": "acme"}, headers={"X-API-Key": KEY})
        assert r.status_code == 200 and r.json()["written"] == 3
        yield url, app


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_no_server_errors(served: tuple[str, Any], mode: str) -> None:
    # Hypothesis driven directly: schemathesis' pytest plugin does not run under pytest 9.
    url, app = served
    schema = schemathesis.openapi.from_dict(app.openapi())
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {"POST /search", "POST /query", "POST /ingest", "GET /stats", "GET /health"}
    assert {op.label for op in operations} >= labels
    statuses: Counter[int] = Counter()
    for op in operations:
        if mode == "negative" and op.label == "GET /health":
            continue  # no parameters: there is no invalid input to send

        @given(case=op.as_strategy(generation_mode=GenerationMode(mode)))
        @settings(
            max_examples=10,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def fuzz(case: Any) -> None:
            for key in (KEY, "fuzz-acme", None):
                headers = {"X-API-Key": key} if key else {}
                response = case.call_and_validate(
                    base_url=url, headers=headers, checks=[not_a_server_error], timeout=30
                )
                statuses[response.status_code] += 1

        fuzz()
    print(mode, dict(statuses))
    assert sum(statuses.values()) >= 3 * (len(operations) - 1)
    assert max(statuses) < 500 and 401 in statuses and any(400 <= c < 500 and c != 401 for c in statuses)
    if mode == "positive":
        assert 200 in statuses


def test_schema_documents_errors_and_auth(served: tuple[str, Any]) -> None:
    spec = served[1].openapi()
    assert spec["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"
    search = spec["paths"]["/search"]["post"]
    assert {"400", "401", "413", "504"} <= set(search["responses"])
