"""Lines of Python per folder of src/mmrag and tests/, as a markdown table (issue #13's before/after).

Reads a git revision (``--rev``: blobs straight from git, the working tree untouched) or, without
``--rev``, the working tree. A folder is a directory holding .py files directly: ``mmrag`` rows are the
package's top-level modules, ``mmrag/store`` the store package, and so on (nested packages get their
own rows). ``lines`` counts physical lines, the measure of the 400-line cap; ``code`` leaves out blank
and comment-only lines (docstrings stay: they are part of a module's size to read).

Usage:
    python benchmarks/linecounts.py --rev b558d5a
    python benchmarks/linecounts.py --rev HEAD
    python benchmarks/linecounts.py            # the working tree
"""

from __future__ import annotations

import argparse
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

REPO = Path(__file__).resolve().parents[1]
ROOTS = ("src/mmrag", "tests")
CAP = 400


@dataclass(frozen=True, slots=True)
class Module:
    """One .py file: its path relative to the repository and its line counts."""

    path: PurePosixPath
    lines: int
    code: int


@dataclass(frozen=True, slots=True)
class Folder:
    """The modules that sit directly in one directory."""

    name: str
    modules: tuple[Module, ...]

    @property
    def lines(self) -> int:
        return sum(m.lines for m in self.modules)

    @property
    def code(self) -> int:
        return sum(m.code for m in self.modules)

    @property
    def largest(self) -> Module:
        return max(self.modules, key=lambda m: (m.lines, str(m.path)))

    @property
    def over_cap(self) -> int:
        return sum(m.lines > CAP for m in self.modules)


def count(path: PurePosixPath, text: str) -> Module:
    """Physical lines and code lines (neither blank nor a comment alone) of one file."""
    lines = text.splitlines()
    code = sum(1 for line in lines if line.strip() and not line.lstrip().startswith("#"))
    return Module(path, len(lines), code)


def from_git(repo: Path, rev: str, roots: Sequence[str]) -> Iterator[Module]:
    """The .py files under ``roots`` at ``rev``, read in one ``git cat-file --batch`` pass."""
    names = subprocess.run(
        ["git", "-C", str(repo), "ls-tree", "-r", "-z", "--name-only", rev, "--", *roots],
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    paths = [n.decode() for n in names if n.endswith(b".py")]
    if not paths:
        return
    batch = subprocess.run(
        ["git", "-C", str(repo), "cat-file", "--batch"],
        input="".join(f"{rev}:{p}\n" for p in paths).encode(),
        check=True,
        capture_output=True,
    ).stdout
    pos = 0
    for path in paths:
        # each answer is "<sha> blob <size>\n" + the blob's bytes + "\n"
        header_end = batch.index(b"\n", pos)
        size = int(batch[pos:header_end].split()[2])
        blob = batch[header_end + 1 : header_end + 1 + size]
        pos = header_end + 1 + size + 1
        yield count(PurePosixPath(path), blob.decode("utf-8", errors="replace"))


def from_tree(repo: Path, roots: Sequence[str]) -> Iterator[Module]:
    """The .py files under ``roots`` in the working tree (caches skipped)."""
    for root in roots:
        for file in sorted((repo / root).rglob("*.py")):
            if "__pycache__" in file.parts:
                continue
            rel = PurePosixPath(file.relative_to(repo).as_posix())
            yield count(rel, file.read_text(encoding="utf-8", errors="replace"))


def folders(modules: Sequence[Module]) -> list[Folder]:
    """Modules grouped by their directory, named without the ``src/`` prefix, in path order."""
    groups: dict[str, list[Module]] = {}
    for m in modules:
        parent = m.path.parent
        name = str(parent.relative_to("src")) if parent.parts[0] == "src" else str(parent)
        groups.setdefault(name, []).append(m)
    return [Folder(name, tuple(groups[name])) for name in sorted(groups)]


def table(rows: Sequence[Folder], title: str) -> str:
    """A markdown table: one row per folder, then a total per root (src/mmrag, tests)."""
    out = [
        f"Lines of Python per folder, {title}",
        "",
        "| folder | files | lines | code | largest module (lines) | over 400 |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for f in rows:
        big = f.largest
        out.append(
            f"| {f.name} | {len(f.modules)} | {f.lines:,} | {f.code:,} | {big.path.name} ({big.lines}) "
            f"| {f.over_cap or ''} |"
        )
    for root, label in (("mmrag", "**src/mmrag total**"), ("tests", "**tests total**")):
        mods = [m for f in rows if f.name.split("/")[0] == root for m in f.modules]
        if mods:
            big = max(mods, key=lambda m: m.lines)
            over = sum(m.lines > CAP for m in mods)
            out.append(
                f"| {label} | {len(mods)} | {sum(m.lines for m in mods):,} | {sum(m.code for m in mods):,} "
                f"| {big.path.as_posix().removeprefix('src/')} ({big.lines}) | {over or ''} |"
            )
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--rev", help="a git revision (commit, branch, tag); default: the working tree")
    parser.add_argument("--repo", type=Path, default=REPO, help="the repository (default: this one)")
    args = parser.parse_args(argv)
    repo: Path = args.repo
    if args.rev:
        cmd = ["git", "-C", str(repo), "rev-parse", "--short", args.rev]
        found = subprocess.run(cmd, capture_output=True, text=True)
        if found.returncode:
            parser.error(f"--rev {args.rev}: {found.stderr.strip() or 'not a revision'} (in {repo})")
        short = found.stdout.strip()
        modules = list(from_git(repo, args.rev, ROOTS))
        title = f"revision {args.rev}" + (f" ({short})" if short != args.rev else "")
    else:
        modules = list(from_tree(repo, ROOTS))
        title = "working tree"
    print(table(folders(modules), title))


if __name__ == "__main__":
    main()
