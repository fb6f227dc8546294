"""Run the real ``mmrag`` CLI in a subprocess with the fake HashEncoder (for the SIGKILL test).

Only the encoder is swapped (``mmrag.cli._common._encoder``): the CLI, runner, ledger and Qdrant Edge
store are the real ones. ``MMRAG_FAKE_ENCODE_DELAY`` (seconds per encoder call) stretches the
run so that kills land in every stage. ``MMRAG_FAKE_KILL_AT=op:n`` makes the process SIGKILL itself
right after the n-th ``op`` (``upsert`` / ``delete``: store writes; ``begin``: a ledger intent), so a
test can put the crash exactly inside the write protocol instead of hoping a timer lands there.

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
    def __init__(self, delay: float) -> None:
        super().__init__()
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


def main() -> int:
    kill_at = os.environ.get("MMRAG_FAKE_KILL_AT")
    if kill_at:
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
    _common._encoder = lambda s, store=None: SlowHashEncoder(delay)  # type: ignore[assignment]
    return cli.main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
