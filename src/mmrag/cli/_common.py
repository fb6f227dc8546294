"""What every ``mmrag`` command shares: the common flags, settings, the store, the encoder, output."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any, Protocol

from mmrag import wiring
from mmrag.config import Settings
from mmrag.encoders.bf16 import set_default_text_precision
from mmrag.encoders.onnxrt import set_default_runtime

if TYPE_CHECKING:
    from mmrag.encoders.base import DualEncoder
    from mmrag.ingest.ledger_base import IngestLedger
    from mmrag.store import QdrantStore


class Report(Protocol):
    """A result that renders itself: ``--json`` prints :meth:`to_dict`, plain output :meth:`to_text`."""

    def to_dict(self) -> dict[str, Any]: ...

    def to_text(self) -> str: ...


def add_common(p: argparse.ArgumentParser) -> None:
    """The flags every command takes (store, model, server, threads, output)."""
    p.add_argument(
        "--store", help="store directory (Qdrant Edge) or Qdrant URL [env MMRAG_STORE, default ./.mmrag]"
    )
    p.add_argument(
        "--model",
        help="encoder spec: lite | openclip:ARCH/TAG | hf-hub:REPO | checkpoint dir "
        "[env MMRAG_MODEL; default: the store's encoder, else lite]",
    )
    p.add_argument("--api-key", help="Qdrant server API key [env MMRAG_API_KEY]")
    p.add_argument("--collection", help="collection name on a Qdrant server [env MMRAG_COLLECTION]")
    p.add_argument("--threads", type=int, help="torch threads, 0 = default [env MMRAG_THREADS]")
    p.add_argument("--batch-size", type=int, help="encoder batch size [env MMRAG_BATCH_SIZE]")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars and status lines on stderr, unless ``--quiet`` or ``--json`` (machine-read runs
    keep stderr for warnings and errors)."""
    return not (args.quiet or args.json)


def status(args: argparse.Namespace, message: str) -> None:
    """One live-status line on stderr, for a step that runs for seconds without a bar of its own
    (loading a model). Silent under ``--quiet`` / ``--json``."""
    if show_progress(args):
        print(f"mmrag: {message}", file=sys.stderr, flush=True)


def _settings(args: argparse.Namespace) -> Settings:
    s = Settings.from_env().with_(
        store=args.store,
        model=args.model,
        api_key=args.api_key,
        collection=args.collection,
        threads=args.threads,
        batch_size=args.batch_size,
    )
    # Encoders loaded deep inside train / eval (not through wiring) follow MMRAG_RUNTIME too.
    set_default_runtime(s.runtime)
    set_default_text_precision(s.text_precision)
    return s


def _open_store(s: Settings) -> QdrantStore:
    return wiring.open_store(s)


def _spec(s: Settings, store: QdrantStore | None = None) -> str:
    return wiring.encoder_spec(s, store)


def _encoder(s: Settings, store: QdrantStore | None = None) -> DualEncoder:
    return wiring.load_encoder(s, store)


def _emit(args: argparse.Namespace, payload: Any, text: str) -> None:
    print(json.dumps(payload, indent=2, ensure_ascii=False) if args.json else text)


def emit_report(args: argparse.Namespace, report: Report) -> None:
    """Print ``report`` as JSON (``--json``) or as text."""
    _emit(args, report.to_dict(), report.to_text())


def _ledger(args: argparse.Namespace, s: Settings, store: QdrantStore) -> IngestLedger:
    from mmrag.ingest.store_ledger import open_ledger

    return open_ledger(store, args.ledger, s.collection)


def _apply_threads(s: Settings) -> None:
    """Set torch's intra-op threads from the settings (0: torch's default)."""
    if s.threads:
        from mmrag.encoders import set_threads

        set_threads(s.threads)
