"""docker-compose files: validated and interpolated by `docker-compose config`, then checked.

No container engine runs here: Debian's `docker-compose` (apt package `docker-compose`, 1.29) parses
and validates the files without one. CI installs it; the test skips with the reason if it is absent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read the resolved compose config")
REPO = Path(__file__).resolve().parents[1]
COMPOSE = shutil.which("docker-compose")
pytestmark = pytest.mark.skipif(
    COMPOSE is None, reason="docker-compose not installed (apt-get install docker-compose)"
)
ENV = {"QDRANT_API_KEY": "qdrant-secret", "MMRAG_SERVE_API_KEY": "api-secret"}


def config(name: str, env: dict[str, str] | None = ENV) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k not in ENV} | (env or {})
    return subprocess.run(
        [str(COMPOSE), "-f", str(REPO / name), "config"],
        capture_output=True,
        text=True,
        env=full,
        cwd=REPO,
        timeout=120,
        check=False,
    )


def resolved(name: str) -> dict[str, Any]:
    res = config(name)
    assert res.returncode == 0, res.stderr
    data: dict[str, Any] = yaml.safe_load(res.stdout)
    return data


def qdrant_image(svc: dict[str, Any]) -> str:
    image = str(svc["image"])
    repo, _, tag = image.partition(":")
    assert repo == "qdrant/qdrant" and tag.startswith("v") and tag != "latest", image
    return tag


def test_single_node_file() -> None:
    cfg = resolved("docker-compose.yml")
    svc = cfg["services"]
    assert set(svc) == {"qdrant", "api", "ui"}
    qdrant_image(svc["qdrant"])
    assert svc["qdrant"]["environment"]["QDRANT__SERVICE__API_KEY"] == "qdrant-secret"
    assert any(v["target"] == "/qdrant/storage" for v in _volumes(svc["qdrant"]))
    api = svc["api"]
    assert api["command"][0] == "serve" and api["environment"]["MMRAG_STORE"] == "http://qdrant:6333"
    assert api["environment"]["QDRANT_API_KEY"] == "qdrant-secret"
    assert api["environment"]["MMRAG_SERVE_API_KEY"] == "api-secret"
    assert svc["ui"]["command"] == ["ui"] and svc["ui"]["image"] == api["image"]
    assert "qdrant_storage" in cfg["volumes"]


def test_cluster_file() -> None:
    cfg = resolved("docker-compose.cluster.yml")
    svc = cfg["services"]
    nodes = [n for n in svc if n.startswith("qdrant-")]
    assert len(nodes) == 3
    assert len({qdrant_image(svc[n]) for n in nodes}) == 1
    storages = set()
    for n in nodes:
        env = svc[n]["environment"]
        assert (
            env["QDRANT__CLUSTER__ENABLED"] == "true" and env["QDRANT__SERVICE__API_KEY"] == "qdrant-secret"
        )
        storages |= {v["source"] for v in _volumes(svc[n]) if v["target"] == "/qdrant/storage"}
    assert len(storages) == 3  # one volume per node
    joins = [" ".join(svc[n]["command"]) for n in nodes]
    assert sum("--bootstrap http://qdrant-0:6335" in j for j in joins) == 2
    env = svc["api"]["environment"]
    assert env["MMRAG_SHARDS"] == "3" and env["MMRAG_REPLICATION_FACTOR"] == "2"


@pytest.mark.parametrize("name", ["docker-compose.yml", "docker-compose.cluster.yml"])
def test_api_key_is_required(name: str) -> None:
    res = config(name, env={})
    assert res.returncode != 0 and "QDRANT_API_KEY" in res.stderr


def _volumes(svc: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for v in svc.get("volumes", []):
        if isinstance(v, str):
            src, _, rest = v.partition(":")
            out.append({"source": src, "target": rest.split(":")[0]})
        else:
            out.append(v)
    return out
