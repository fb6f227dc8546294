"""Split long text into overlapping, word-bounded chunks.

By default chunks are measured in words (no tokenizer needed; 160 words keeps English text
inside the 256-token context of MiniLM-class text towers). :meth:`ChunkingOptions.for_encoder`
measures them in the encoder's own tokens instead, up to its context length, so that no chunk
is truncated by the text tower and none wastes half the window (CJK, code, numbers tokenize
to many more tokens per word than English prose).
"""

from __future__ import annotations

import re
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

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
        words: Maximum number of words in one chunk (when ``max_tokens`` is unset).
        overlap: Amount repeated at the start of a chunk from the end of the previous one, so
            that a sentence cut by a boundary is still whole in one of the two chunks; in words,
            or in tokens when ``max_tokens`` is set. Must be below the chunk size.
        max_tokens: Chunk size in tokens of ``token_counter`` (overrides ``words``).
        token_counter: Returns the number of tokens of each word (no special tokens).
        tokenizer_id: Names the tokenizer (part of the ingest ledger's fingerprint).

    Raises:
        ConfigError: If ``words`` is not a positive integer or ``overlap`` is out of range.

    Example:
        >>> opts = ChunkingOptions(words=100, overlap=20)
        >>> opts.words - opts.overlap
        80
    """

    words: int = 160
    overlap: int = 32
    max_tokens: int | None = None
    token_counter: Callable[[Sequence[str]], list[int]] | None = field(
        default=None, compare=False, repr=False
    )
    tokenizer_id: str = ""

    @property
    def budget(self) -> int:
        """Chunk size in its unit (tokens when ``max_tokens`` is set, else words)."""
        return self.max_tokens if self.max_tokens is not None else self.words

    def weights(self, words: Sequence[str]) -> list[int]:
        """Size of each word in the budget's unit."""
        if self.max_tokens is None or self.token_counter is None:
            return [1] * len(words)
        return [max(1, n) for n in self.token_counter(words)]

    @classmethod
    def for_encoder(
        cls, encoder: Any, *, overlap: int = 32, max_tokens: int | None = None
    ) -> ChunkingOptions:
        """Token-aware options from an encoder's Hugging Face tokenizer and context length.

        Falls back to word counting (with a logged reason) for encoders without one.

        Args:
            encoder: An encoder whose ``tokenizer`` wraps a HF tokenizer (``.tokenizer``) and has
                ``.context_length`` (the lite MiniLM text tower, HF open_clip towers).
            overlap: Overlap in tokens.
            max_tokens: Chunk size; default the context length minus the 2 special tokens.
        """
        counter = hf_token_counter(getattr(encoder, "tokenizer", None))
        if counter is None:
            import logging

            logging.getLogger(__name__).info(
                "encoder %s exposes no HF tokenizer; chunking by words", getattr(encoder, "id", "?")
            )
            return cls(overlap=min(overlap, 159))
        count, context, name = counter
        size = max_tokens if max_tokens is not None else max(8, context - 2)
        return cls(overlap=overlap, max_tokens=size, token_counter=count, tokenizer_id=name)

    def __post_init__(self) -> None:
        # bool is an int subclass; ChunkingOptions(words=True) is a bug, not a 1-word chunk.
        if not isinstance(self.words, int) or isinstance(self.words, bool) or self.words < 1:
            raise ConfigError(f"chunk words must be a positive integer, got {self.words!r}")
        if not isinstance(self.overlap, int) or isinstance(self.overlap, bool):
            raise ConfigError(f"chunk overlap must be an integer, got {self.overlap!r}")
        if self.max_tokens is not None:
            if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
                raise ConfigError(f"chunk max_tokens must be a positive integer, got {self.max_tokens!r}")
            if self.token_counter is None:
                raise ConfigError("chunk max_tokens needs a token_counter (use ChunkingOptions.for_encoder)")
        if not 0 <= self.overlap < self.budget:
            unit = "max_tokens" if self.max_tokens is not None else "words"
            raise ConfigError(
                f"chunk overlap must satisfy 0 <= overlap < {unit} ({unit}={self.budget}), "
                f"got overlap={self.overlap}; lower the overlap or raise the chunk size"
            )


def hf_token_counter(
    tokenizer: Any,
) -> tuple[Callable[[Sequence[str]], list[int]], int, str] | None:
    """``(per-word token counter, context length, name)`` for an mmrag/open_clip HF tokenizer.

    The counter uses its own copy of the fast tokenizer's backend (no truncation, no padding)
    behind a lock, so reader threads never race the encoder's tokenizer, and caches per word:
    WordPiece/BPE pre-tokenize on whitespace, so a text's tokens are the sum of its words'.
    """
    hf = getattr(tokenizer, "tokenizer", None)
    context = getattr(tokenizer, "context_length", None)
    backend = getattr(hf, "backend_tokenizer", None)
    if backend is None or not isinstance(context, int):
        return None
    name = str(getattr(hf, "name_or_path", "hf"))
    return TokenCounter(backend.to_str()), context, name.rsplit("/", 1)[-1]


class TokenCounter:
    """Per-word token counts from a fast tokenizer (given as its JSON), cached per word.

    A class rather than a closure so that it pickles (as the tokenizer JSON): the Ray engine
    ships :class:`ChunkingOptions` to parsing workers on other processes or machines, where the
    tokenizer, lock and cache are rebuilt.
    """

    def __init__(self, tokenizer_json: str) -> None:
        from tokenizers import Tokenizer

        self._json = tokenizer_json
        self._own = Tokenizer.from_str(tokenizer_json)
        self._own.no_truncation()
        self._own.no_padding()
        self._cache: dict[str, int] = {}
        self._lock = threading.Lock()

    def __reduce__(self) -> tuple[type[TokenCounter], tuple[str]]:
        return TokenCounter, (self._json,)

    def __call__(self, words: Sequence[str]) -> list[int]:
        own, cache = self._own, self._cache
        with self._lock:
            missing = list({w for w in words if w not in cache})
            if missing:
                for w, enc in zip(missing, own.encode_batch(missing, add_special_tokens=False), strict=True):
                    cache[w] = len(enc.ids)
                if len(cache) > 500_000:  # bound memory on huge vocabularies of one-off strings
                    cache.clear()
                    return [len(e.ids) for e in own.encode_batch(list(words), add_special_tokens=False)]
            return [cache[w] for w in words]


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
    if n == 0:
        return []
    budget = opts.budget
    cum = [0]
    for w in opts.weights(words):
        cum.append(cum[-1] + w)
    chunks: list[str] = []
    lo = 0
    while lo < n:
        # The longest window from lo within budget (at least one word, even an oversized one).
        hi = min(max(bisect_right(cum, cum[lo] + budget) - 1, lo + 1), n)
        if hi < n:
            # Never cut before the window is half full, and always past the overlap, so every
            # chunk adds new words and the loop terminates.
            floor = max(bisect_right(cum, cum[lo] + max(opts.overlap, budget // 2)) - 1, lo)
            hi = _cut(words, seps, hi, min(floor, hi - 1))
        chunks.append(_render(words, seps, lo, hi))
        if hi >= n:
            break
        lo = max(bisect_left(cum, cum[hi] - opts.overlap), lo + 1)
    return chunks


def normalize(text: str) -> str:
    """``text`` as :func:`split_text` renders it: invisible characters dropped, spaces and single
    newlines folded, blank lines kept as paragraph breaks."""
    words, seps = _tokens(text)
    return _render(words, seps, 0, len(words))


def measure(text: str, opts: ChunkingOptions) -> int:
    """Size of ``text`` in the unit of ``opts`` (tokens or words)."""
    words, _ = _tokens(text)
    return sum(opts.weights(words)) if words else 0
