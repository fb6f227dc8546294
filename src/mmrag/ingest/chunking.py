"""Split long text into overlapping, word-bounded chunks.

Chunks are measured in words rather than model tokens so that chunking needs no tokenizer
and gives the same result whatever encoder is configured later; 160 words keeps English text
inside the 256-token context of MiniLM-class text towers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mmrag.errors import ConfigError

# Blank lines (possibly holding stray spaces) separate paragraphs in every format we load.
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\f\v\u00a0]*\n\s*")
# C0/C1 control characters other than tab/newline carry no meaning for retrieval and come out
# of PDF text layers (U+0002 for hyphenation points) and mis-decoded files; the soft hyphen,
# zero-width space and BOMs would otherwise split words into odd tokens. ZWJ / ZWNJ stay: they
# change meaning in Persian, Indic scripts and emoji.
_INVISIBLE = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f\u00ad\u200b\u2060\ufeff\ufffe]")
_SENTENCE_END = re.compile(r"[.!?:;。！？][\"')\]」』]*$")
# Chinese and Japanese are written without spaces; counting each ideograph or kana as a word
# keeps chunks near the encoder's context (BERT-style tokenizers split them per character).
_CJK = "\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
_PIECES = re.compile(rf"[{_CJK}]|[^{_CJK}]+")
# Other unspaced runs (Thai, base64 blobs, long URLs) are counted in slices of this many
# characters, so one "word" can never blow a chunk far past the context window.
_LONG_RUN = 30
_SLICE = 10

# Separator before a word when rendered: a space, a paragraph break, or nothing (same word).
_SPACE, _PARAGRAPH, _GLUED = 0, 1, 2
_SEPARATORS = (" ", "\n\n", "")


@dataclass(frozen=True, slots=True)
class ChunkingOptions:
    """How :func:`split_text` cuts text.

    Attributes:
        words: Maximum number of words in one chunk.
        overlap: Number of words repeated at the start of a chunk from the end of the previous
            one, so that a sentence cut by a boundary is still whole in one of the two chunks.
            Must satisfy ``0 <= overlap < words``.

    Raises:
        ConfigError: If ``words`` is not a positive integer or ``overlap`` is out of range.

    Example:
        >>> opts = ChunkingOptions(words=100, overlap=20)
        >>> opts.words - opts.overlap
        80
    """

    words: int = 160
    overlap: int = 32

    def __post_init__(self) -> None:
        # bool is an int subclass; ChunkingOptions(words=True) is a bug, not a 1-word chunk.
        if not isinstance(self.words, int) or isinstance(self.words, bool) or self.words < 1:
            raise ConfigError(f"chunk words must be a positive integer, got {self.words!r}")
        if not isinstance(self.overlap, int) or isinstance(self.overlap, bool):
            raise ConfigError(f"chunk overlap must be an integer, got {self.overlap!r}")
        if not 0 <= self.overlap < self.words:
            raise ConfigError(
                f"chunk overlap must satisfy 0 <= overlap < words (words={self.words}), "
                f"got overlap={self.overlap}; lower the overlap or raise the chunk size"
            )


def _split_word(word: str) -> list[str]:
    """Split one whitespace-delimited word into the units that count against the chunk size."""
    pieces: list[str] = _PIECES.findall(word)
    if len(pieces) == 1 and len(word) <= _LONG_RUN:
        return [word]
    out: list[str] = []
    for piece in pieces:
        out.extend(piece[i : i + _SLICE] for i in range(0, len(piece), _SLICE))
    return out


def _tokens(text: str) -> tuple[list[str], list[int]]:
    """Return the words of ``text`` and, per word, the separator that precedes it."""
    text = _INVISIBLE.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    words: list[str] = []
    seps: list[int] = []
    for paragraph in _PARAGRAPH_BREAK.split(text):
        sep = _PARAGRAPH
        # str.split() with no argument splits on every Unicode space (NBSP, thin space...).
        for word in paragraph.split():
            for j, piece in enumerate(_split_word(word)):
                words.append(piece)
                seps.append(_GLUED if j else sep)
            sep = _SPACE
    return words, seps


def _render(words: list[str], seps: list[int], lo: int, hi: int) -> str:
    """Join ``words[lo:hi]``, keeping paragraph breaks as blank lines for readable chunks."""
    out: list[str] = []
    for i in range(lo, hi):
        if i > lo:
            out.append(_SEPARATORS[seps[i]])
        out.append(words[i])
    return "".join(out)


def _cut(words: list[str], seps: list[int], hi: int, floor: int) -> int:
    """Pick the end of a chunk whose window ends at ``hi``: the last paragraph break in
    ``(floor, hi]``, else the last sentence end, else the last space, else ``hi``."""
    for end in range(hi, floor, -1):
        if seps[end] == _PARAGRAPH:
            return end
    for end in range(hi, floor, -1):
        if _SENTENCE_END.search(words[end - 1]):
            return end
    for end in range(hi, floor, -1):
        if seps[end] == _SPACE:
            return end
    return hi


def split_text(text: str, opts: ChunkingOptions) -> list[str]:
    """Split ``text`` into chunks of at most ``opts.words`` words.

    Whitespace is normalised (runs of spaces and single newlines become one space; blank lines
    stay as paragraph breaks) and invisible control characters are dropped. A chunk ends at a
    paragraph break when one falls in the second half of the window, else at a sentence end,
    else between words. Each chunk after the first starts with the last ``opts.overlap`` words
    of the previous chunk.

    Args:
        text: Any text; may be empty.
        opts: Chunk size and overlap.

    Returns:
        The chunks in reading order; never contains an empty string (empty input gives ``[]``).

    Example:
        >>> split_text("one two three four five", ChunkingOptions(words=3, overlap=1))
        ['one two three', 'three four five']
    """
    words, seps = _tokens(text)
    n = len(words)
    chunks: list[str] = []
    lo = 0
    while lo < n:
        hi = min(lo + opts.words, n)
        if hi < n:
            # Never cut before the window is half full, and always past the overlap, so every
            # chunk adds new words and the loop terminates.
            floor = lo + max(opts.overlap, opts.words // 2)
            hi = _cut(words, seps, hi, floor)
        chunks.append(_render(words, seps, lo, hi))
        if hi >= n:
            break
        lo = hi - opts.overlap
    return chunks
