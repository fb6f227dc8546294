"""The ``mmrag`` command: ingest | search | eval | train | train-reranker | info | model-set | verify |
ledger | ui | serve.

Every command takes ``--store`` (env ``MMRAG_STORE``) and ``--model`` (env ``MMRAG_MODEL``);
``--json`` prints stable, documented JSON on stdout (progress and logs go to stderr).

One module per command group: :mod:`~mmrag.cli.ingest` (ingest, verify), :mod:`~mmrag.cli.ledger`,
:mod:`~mmrag.cli.search`
(search, info, model-set), :mod:`~mmrag.cli.training` (eval, train, train-reranker), :mod:`~mmrag.cli.serve`
(ui, serve); the flags and helpers they share are in :mod:`~mmrag.cli._common`, and the store and
models come from :mod:`mmrag.wiring`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from mmrag.cli._common import (
    _apply_threads,
    _emit,
    _encoder,
    _ledger,
    _open_store,
    _settings,
    _spec,
    add_common,
    emit_report,
)
from mmrag.cli.ingest import add_ingest_parser, add_verify_parser, cmd_ingest, cmd_verify
from mmrag.cli.ledger import add_ledger_parser, cmd_ledger
from mmrag.cli.search import (
    add_info_parser,
    add_model_set_parser,
    add_search_parser,
    cmd_info,
    cmd_model_set,
    cmd_search,
)
from mmrag.cli.serve import add_serve_parser, add_ui_parser, cmd_serve, cmd_ui
from mmrag.cli.training import (
    add_eval_parser,
    add_train_parser,
    add_train_reranker_parser,
    cmd_eval,
    cmd_train,
    cmd_train_reranker,
)
from mmrag.errors import MmragError

__all__ = [
    "COMMANDS",
    "_apply_threads",
    "_emit",
    "_encoder",
    "_ledger",
    "_open_store",
    "_settings",
    "_spec",
    "add_common",
    "build_parser",
    "cmd_eval",
    "cmd_info",
    "cmd_ingest",
    "cmd_ledger",
    "cmd_model_set",
    "cmd_search",
    "cmd_serve",
    "cmd_train",
    "cmd_train_reranker",
    "cmd_ui",
    "cmd_verify",
    "emit_report",
    "main",
]

log = logging.getLogger("mmrag")

# In the order ``mmrag --help`` lists them.
_PARSERS = (
    add_ingest_parser,
    add_verify_parser,
    add_ledger_parser,
    add_search_parser,
    add_eval_parser,
    add_train_parser,
    add_train_reranker_parser,
    add_info_parser,
    add_model_set_parser,
    add_ui_parser,
    add_serve_parser,
)

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "ingest": cmd_ingest,
    "search": cmd_search,
    "eval": cmd_eval,
    "train": cmd_train,
    "train-reranker": cmd_train_reranker,
    "info": cmd_info,
    "model-set": cmd_model_set,
    "verify": cmd_verify,
    "ledger": cmd_ledger,
    "ui": cmd_ui,
    "serve": cmd_serve,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmrag", description="Multimodal RAG retriever (text + images, Qdrant)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in _PARSERS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return COMMANDS[args.command](args)
    except MmragError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
