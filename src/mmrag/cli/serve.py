"""``mmrag ui`` and ``mmrag serve``: the Streamlit app and the REST API over the store."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mmrag.cli._common import _settings, add_common


def add_ui_parser(sub: Any) -> None:
    p = sub.add_parser("ui", help="start the Streamlit app (extra 'ui') on the store")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8501, help="port to listen on")
    p.add_argument(
        "--ingest-root", help="folder the app may ingest from [env MMRAG_INGEST_ROOT; default: cwd and data]"
    )
    p.add_argument(
        "--reranker",
        help="cross-encoder for the rerank toggle [env MMRAG_RERANKER; default: the store's recorded one]",
    )
    add_common(p)


def add_serve_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the REST API (extra 'api'; see mmrag.api)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 in a container)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--no-access-log",
        dest="access_log",
        action="store_false",
        default=None,
        help="no log line per request [env MMRAG_ACCESS_LOG=0]",
    )
    p.add_argument(
        "--reranker",
        help="cross-encoder of the rerank stage [env MMRAG_RERANKER; default: the store's recorded one]",
    )
    add_common(p)


def cmd_ui(args: argparse.Namespace) -> int:
    import os

    from mmrag._lazy import require
    from mmrag.ui import app_environment, streamlit_command

    require("streamlit", "ui")
    s = _settings(args).with_(ingest_root=args.ingest_root, reranker=args.reranker)
    if not s.store.startswith(("http://", "https://")) and s.store != ":memory:":
        s = s.with_(store=str(Path(s.store).expanduser().resolve()))
    print(f"mmrag ui: http://{args.host}:{args.port} (store {s.store}); Ctrl-C stops it", file=sys.stderr)
    sys.stderr.flush()
    # exec, not a child process: a signal sent to `mmrag ui` (Ctrl-C, a supervisor's SIGTERM) reaches
    # Streamlit itself instead of orphaning it
    cmd = streamlit_command(args.host, args.port)
    os.execve(cmd[0], cmd, app_environment(s))


def cmd_serve(args: argparse.Namespace) -> int:
    from mmrag.api import serve

    settings = _settings(args).with_(reranker=args.reranker)
    serve(settings, host=args.host, port=args.port, access_log=args.access_log)
    return 0
