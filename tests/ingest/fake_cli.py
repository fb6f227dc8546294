"""Run the real ``mmrag`` CLI in a subprocess with the fake HashEncoder (for the SIGKILL test).

Only the encoder is swapped (``mmrag.cli._common._encoder``): the CLI, runner, ledger and Qdrant Edge
store are the real ones. ``MMRAG_FAKE_ENCODE_DELAY`` (seconds per encoder call) stretches the
run so that kills land in every stage. ``MMRAG_FAKE_KILL_AT=op:n`` makes the process SIGKILL itself
right after the n-th ``op`` (``upsert`` / ``delete``: store writes; ``begin``: a ledger intent), so a
test can put the crash exactly inside the write protocol instead of hoping a timer lands there.
The vector add of a second encoder (``MMRAG_FAKE_ENCODER_ID`` names it) has its own points:
``copy`` (after the first page read for the new shard), ``swap`` (just before the store's record
switches to the new shard), ``cleanup`` (after the switch, before the old shard is removed).

Usage: python -m tests.ingest.fake_cli ingest FOLDER --store DIR ...
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

from mmrag import cli
from mmrag.cli import _common
from tests.fakes import HashEncoder


class SlowHashEncoder(HashEncoder):
    def __init__(self, delay: float, encoder_id: str = "hash-test") -> None:
        super().__init__(encoder_id=encoder_id)
        self.delay = delay

    def encode_text(self, texts: Sequence[str], *, batch_size: int | None = None) -> Any:
        time.sleep(self.delay)
        return super().encode_text(texts, batch_size=batch_size)

    def encode_image(self, images: Sequence[Any], *, batch_size: int | None = None) -> Any:
        time.sleep(self.delay)
        return super().encode_image(images, batch_size=batch_size)


def _kill_after(owner: Any, name: str, n: int) -> None:
    original = getattr(owner, name)
    calls = 0

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        out = original(*args, **kwargs)
        calls += 1
        if calls == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    setattr(owner, name, wrapped)


def _kill_in_copy() -> None:
    from mmrag.store import edge

    original = edge.scroll_all

    def pages(*args: Any, **kwargs: Any) -> Any:
        for page in original(*args, **kwargs):
            yield page
            os.kill(os.getpid(), signal.SIGKILL)  # the page was read, not yet written to the new shard

    edge.scroll_all = pages  # type: ignore[assignment]


def _kill_before(owner: Any, name: str) -> None:
    def die(*args: Any, **kwargs: Any) -> Any:
        os.kill(os.getpid(), signal.SIGKILL)

    setattr(owner, name, die)


def main() -> int:
    kill_at = os.environ.get("MMRAG_FAKE_KILL_AT")
    if kill_at in ("copy", "swap", "cleanup"):
        from mmrag.store import edge

        if kill_at == "copy":
            _kill_in_copy()
        elif kill_at == "swap":
            _kill_before(edge.EdgeBackend, "_write_meta_file")
        else:
            _kill_before(edge.shutil, "rmtree")
    elif kill_at:
        from mmrag.ingest.ledger import Ledger
        from mmrag.store import QdrantStore

        op, n = kill_at.split(":")
        owner, name = {
            "upsert": (QdrantStore, "upsert_chunks"),
            "delete": (QdrantStore, "delete"),
            "begin": (Ledger, "begin"),
        }[op]
        _kill_after(owner, name, int(n))
    delay = float(os.environ.get("MMRAG_FAKE_ENCODE_DELAY", "0"))
    enc_id = os.environ.get("MMRAG_FAKE_ENCODER_ID", "hash-test")
    _common._encoder = lambda s, store=None: SlowHashEncoder(delay, enc_id)  # type: ignore[assignment]
    return cli.main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
