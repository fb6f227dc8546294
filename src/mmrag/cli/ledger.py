"""``mmrag ledger migrate``: move a machine's local SQLite ledger into a server store's own ledger."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mmrag.cli._common import _emit, _open_store, _settings, add_common
from mmrag.errors import MmragError


def add_ledger_parser(sub: Any) -> None:
    p = sub.add_parser("ledger", help="manage the ingest ledger (migrate a local one into the store)")
    p.add_argument("action", choices=["migrate"], help="migrate: copy a local SQLite ledger into the store")
    p.add_argument(
        "--ledger",
        help="the SQLite ledger to migrate [default: this machine's old default for the store, "
        "~/.cache/mmrag/ledgers/<digest>.sqlite]",
    )
    add_common(p)


def cmd_ledger(args: argparse.Namespace) -> int:
    from mmrag.ingest.ledger import Ledger, default_ledger_path
    from mmrag.ingest.store_ledger import StoreLedger, migrate_ledger

    s = _settings(args)
    with _open_store(s) as store:
        path = args.ledger or default_ledger_path(store, s.collection)
        if path == ":memory:" or not Path(path).exists():
            raise MmragError(f"no local ledger at {path}: nothing to migrate (pass --ledger PATH)")
        with Ledger(path) as old, StoreLedger(store) as new:
            out = migrate_ledger(old, new)
    _emit(
        args,
        out | {"from": str(path), "to": new.location},
        f"migrated {out['sources']} files ({out['chunks']} chunks) from {path} into {new.location}; "
        "the local file is no longer used (delete it when every machine has switched)"
        + "".join(
            f"\n  skipped {s}: the store-side ledger holds another version (kept)" for s in out["skipped"]
        ),
    )
    return 0
