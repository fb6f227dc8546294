"""``python -m mmrag.cli``: the ``mmrag`` command (tests and benchmarks start it this way)."""

from mmrag.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
