"""Tests for mmrag.ingest.loaders on the real ingest_demo folder and on broken files in tmp_path."""

from __future__ import annotations

import csv
import json
import shutil
from collections import defaultdict
from pathlib import Path

import pytest

from mmrag.errors import ConfigError, LoaderError
from mmrag.ingest import ocr
from mmrag.ingest.chunking import ChunkingOptions
from mmrag.ingest.loaders import IMAGE_EXTENSIONS, TEXT_EXTENSIONS, iter_files, load_file
from mmrag.types import Chunk, chunk_id, content_hash

OPTS = ChunkingOptions()
# The one file of ingest_demo that cannot be loaded without OCR: a scan with no text layer.
EXPECTED_FAILURES = {} if ocr.available() else {"pdf/scanned-table-no-text-layer.pdf": "no text layer"}
PHOTO = "images/photos/2419221084_01a14176b4.jpg"


@pytest.fixture(scope="module")
def demo(data_dir: Path) -> Path:
    return data_dir / "ingest_demo"


@pytest.fixture(scope="module")
def manifest(data_dir: Path) -> list[dict[str, str]]:
    with (data_dir / "ingest_demo.MANIFEST.csv").open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def loaded(demo: Path) -> dict[str, list[Chunk] | LoaderError]:
    """Every file of ingest_demo loaded once (the 2.4 MB 10-K takes about a second)."""
    out: dict[str, list[Chunk] | LoaderError] = {}
    for path in iter_files(demo):
        try:
            out[path.relative_to(demo).as_posix()] = load_file(path, opts=OPTS)
        except LoaderError as exc:
            out[path.relative_to(demo).as_posix()] = exc
    return out


def _chunks(loaded: dict[str, list[Chunk] | LoaderError], rel: str) -> list[Chunk]:
    result = loaded[rel]
    assert isinstance(result, list), f"{rel} failed: {result}"
    return result


# --------------------------------------------------------------------------- real data


def test_iter_files_lists_the_manifest(demo: Path, manifest: list[dict[str, str]]) -> None:
    files = [p.relative_to(demo).as_posix() for p in iter_files(demo)]
    assert files == sorted(files)
    assert set(files) == {row["path"] for row in manifest}


def test_every_demo_file_loads_or_fails_with_a_reason(loaded: dict[str, list[Chunk] | LoaderError]) -> None:
    failures = {rel: str(r) for rel, r in loaded.items() if isinstance(r, LoaderError)}
    assert set(failures) == set(EXPECTED_FAILURES)
    for rel, needle in EXPECTED_FAILURES.items():
        assert needle in failures[rel]


def test_each_format_produces_chunks(loaded: dict[str, list[Chunk] | LoaderError]) -> None:
    formats = {c.metadata["format"] for r in loaded.values() if isinstance(r, list) for c in r}
    assert formats == {"pdf", "html", "markdown", "text", "image"}
    suffixes = {Path(rel).suffix for rel, r in loaded.items() if isinstance(r, list) and r}
    assert {".html", ".md", ".txt", ".pdf", ".jpg", ".png"} <= suffixes


def test_chunk_records_are_well_formed(demo: Path, loaded: dict[str, list[Chunk] | LoaderError]) -> None:
    for rel, result in loaded.items():
        if isinstance(result, LoaderError):
            continue
        path = demo / rel
        file_hash = content_hash(path.read_bytes())
        assert result, rel
        assert len({c.id for c in result}) == len(result), f"duplicate ids in {rel}"
        assert [c.metadata["position"] for c in result] == list(range(len(result)))
        for c in result:
            assert c.source == str(path.resolve())
            assert c.metadata["file_hash"] == file_hash
            json.dumps(dict(c.metadata))  # payloads go to Qdrant as JSON
            if c.modality == "text":
                assert c.text and c.text == c.text.strip() and c.image is None
                assert len(c.text.split()) <= OPTS.words
            elif c.metadata["format"] == "pdf":  # a figure drawn on a PDF page
                assert c.image == f"{c.source}#page={c.metadata['page']}&image={c.metadata['figure']}"
            else:
                assert c.image == c.source and c.metadata["format"] == "image"


def test_dpr_paper_mentions_dense_passage_retrieval(
    demo: Path, manifest: list[dict[str, str]], loaded: dict[str, list[Chunk] | LoaderError]
) -> None:
    row = next(r for r in manifest if "Dense Passage Retrieval" in r["description"])
    chunks = _chunks(loaded, row["path"])
    assert any("dense passage retrieval" in (c.text or "").lower() for c in chunks)
    pages = [c.metadata["page"] for c in chunks]
    assert pages == sorted(pages) and set(pages) == set(range(1, 14))  # 13 pages, all with text
    # Ids are page-qualified: position within the page, restarting on each page.
    per_page: dict[int, int] = defaultdict(int)
    source = str((demo / row["path"]).resolve())
    for c in chunks:
        local = per_page[c.metadata["page"]]
        per_page[c.metadata["page"]] += 1
        assert c.id == chunk_id(source, c.text or "", f"p{c.metadata['page']}:{local}")


def test_html_title_and_hidden_xbrl_dropped(loaded: dict[str, list[Chunk] | LoaderError]) -> None:
    essay = _chunks(loaded, "html/paul-graham-how-to-get-new-ideas.html")
    assert essay[0].metadata["title"] == "How to Get New Ideas"
    assert "anomalies" in (essay[0].text or "")
    filing = _chunks(loaded, "html/galaxy-gaming-10k-full.html")
    # The inline-XBRL header is display:none; the visible filing starts with the cover page.
    assert (filing[0].text or "").startswith("UNITED STATES")
    assert not any("xbrli:shares" in (c.text or "") for c in filing)


def test_markdown_heading_metadata(loaded: dict[str, list[Chunk] | LoaderError]) -> None:
    chunks = _chunks(loaded, "markdown/codeblock.md")
    assert [c.metadata.get("heading") for c in chunks] == ["HTML Example", "XML Example"]
    # A pipe table stays one block with its rows on their own lines.
    assert _chunks(loaded, "markdown/simple-table.md")[0].text == (
        "Item | Price | # In stock\n---|---|---\nJuicy Apples | 1.99 | 739\nBananas | 1.89 | 6"
    )


def test_double_encoded_utf8_is_repaired(loaded: dict[str, list[Chunk] | LoaderError]) -> None:
    text = " ".join(c.text or "" for c in _chunks(loaded, "text/iwan-roberts-wikipedia.txt"))
    assert "1986–1990 Watford" in text
    assert "â" not in text


def test_photo_caption_from_mapping(demo: Path, manifest: list[dict[str, str]]) -> None:
    path = demo / PHOTO
    caption = next(r["caption"] for r in manifest if r["path"] == PHOTO)
    [chunk] = load_file(path, opts=OPTS, captions={path.name: [caption, "  a second   one "]})
    assert chunk.modality == "image" and chunk.image == str(path.resolve())
    assert chunk.text == f"{caption} | a second one"
    assert chunk.metadata["caption_source"] == "mapping"
    assert (chunk.metadata["width"], chunk.metadata["height"]) == (224, 224)
    assert chunk.id == chunk_id(chunk.source, content_hash(path.read_bytes()), 0)
    [bare] = load_file(path, opts=OPTS, captions={"other.jpg": ["x"]})
    assert bare.text is None and "caption_source" not in bare.metadata
    assert bare.id == chunk.id  # a caption is payload, not identity


def test_loading_twice_gives_identical_ids(demo: Path) -> None:
    for rel in ["pdf/layoutparser-paper-2p.pdf", "markdown/unstructured-README.md", PHOTO]:
        first = load_file(demo / rel, opts=OPTS)
        again = load_file(demo / rel, opts=OPTS)
        assert [c.id for c in first] == [c.id for c in again]
        assert first == again


def test_same_bytes_elsewhere_get_other_ids(demo: Path, tmp_path: Path) -> None:
    src = demo / "text/war-and-peace-chapter1.txt"
    copy = tmp_path / src.name
    shutil.copyfile(src, copy)
    a, b = load_file(src, opts=OPTS), load_file(copy, opts=OPTS)
    assert [c.text for c in a] == [c.text for c in b]
    assert not {c.id for c in a} & {c.id for c in b}


def test_smaller_chunks_give_more_of_them(demo: Path) -> None:
    path = demo / "text/war-and-peace-chapter1.txt"
    big = load_file(path, opts=OPTS)
    small = load_file(path, opts=ChunkingOptions(words=40, overlap=8))
    assert len(small) > len(big)
    assert all(len((c.text or "").split()) <= 40 for c in small)


# --------------------------------------------------------------------------- broken files


@pytest.mark.parametrize("name", ["empty.txt", "empty.md", "empty.html", "empty.pdf", "empty.jpg"])
def test_empty_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"")
    with pytest.raises(LoaderError, match=r"^empty file$"):
        load_file(path, opts=OPTS)


@pytest.mark.parametrize("name", ["junk.txt", "junk.md", "junk.html"])
def test_binary_junk_as_text(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(bytes(range(256)) * 16)
    with pytest.raises(LoaderError, match="binary content"):
        load_file(path, opts=OPTS)


def test_whitespace_only_text(tmp_path: Path) -> None:
    path = tmp_path / "blank.txt"
    path.write_text(" \n\t\n ", encoding="utf-8")
    with pytest.raises(LoaderError, match="no text found"):
        load_file(path, opts=OPTS)


def test_truncated_jpeg(demo: Path, tmp_path: Path) -> None:
    data = (demo / PHOTO).read_bytes()
    path = tmp_path / "half.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(LoaderError, match=r"^corrupt image: ") as info:
        load_file(path, opts=OPTS)
    assert isinstance(info.value.__cause__, OSError)


def test_text_named_as_image(tmp_path: Path) -> None:
    path = tmp_path / "fake.png"
    path.write_text("not an image at all", encoding="utf-8")
    with pytest.raises(LoaderError, match="corrupt image"):
        load_file(path, opts=OPTS)


def test_garbage_pdf(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pdf"
    path.write_bytes(b"this is not a PDF \x00\x01\x02" * 100)
    with pytest.raises(LoaderError, match="corrupt or unreadable PDF"):
        load_file(path, opts=OPTS)


def _tiny_pdf(*, encrypted: bool) -> bytes:
    """A one-page PDF with no text; ``encrypted`` adds a standard-security dictionary."""
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>",
    ]
    if encrypted:
        objs.append(
            b"<< /Filter /Standard /V 1 /R 2 /O <" + b"ab" * 32 + b"> /U <" + b"cd" * 32 + b"> /P -4 >>"
        )
    out, offsets = b"%PDF-1.4\n", []
    for i, obj in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    trailer = b"/Size %d /Root 1 0 R" % (len(objs) + 1)
    if encrypted:
        trailer += b" /Encrypt 4 0 R /ID [<" + b"00" * 16 + b"> <" + b"00" * 16 + b">]"
    return out + b"trailer\n<< " + trailer + b" >>\nstartxref\n%d\n%%%%EOF\n" % xref


def test_pdf_without_text_layer(tmp_path: Path) -> None:
    path = tmp_path / "blank.pdf"
    path.write_bytes(_tiny_pdf(encrypted=False))
    with pytest.raises(LoaderError, match="no text layer"):
        load_file(path, opts=OPTS)


def test_encrypted_pdf(tmp_path: Path) -> None:
    path = tmp_path / "locked.pdf"
    path.write_bytes(_tiny_pdf(encrypted=True))
    with pytest.raises(LoaderError, match="encrypted PDF"):
        load_file(path, opts=OPTS)


@pytest.mark.parametrize(
    ("name", "reason"), [("a.xyz", "unsupported extension '.xyz'"), ("Makefile", "no extension")]
)
def test_unsupported_files(tmp_path: Path, name: str, reason: str) -> None:
    path = tmp_path / name
    path.write_text("content", encoding="utf-8")
    with pytest.raises(LoaderError, match=reason):
        load_file(path, opts=OPTS)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(LoaderError, match="cannot read file"):
        load_file(tmp_path / "gone.txt", opts=OPTS)


# --------------------------------------------------------------------------- decoding and formats


def test_upper_case_suffix_and_utf8_bom(tmp_path: Path) -> None:
    path = tmp_path / "NOTE.TXT"
    path.write_bytes(b"\xef\xbb\xbfhello  world")
    [chunk] = load_file(path, opts=OPTS)
    assert chunk.text == "hello world" and chunk.metadata["format"] == "text"


def test_utf16_with_bom(tmp_path: Path) -> None:
    path = tmp_path / "wide.txt"
    path.write_bytes("grüße aus Köln".encode("utf-16"))  # has NUL bytes, but a BOM says it is text
    assert load_file(path, opts=OPTS)[0].text == "grüße aus Köln"


def test_legacy_encoding_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "latin.txt"
    sentence = "Le café est très apprécié à Paris ; les élèves préfèrent le thé glacé. "
    path.write_bytes((sentence * 20).encode("cp1252"))
    text = load_file(path, opts=OPTS)[0].text or ""
    assert "café" in text and "élèves" in text


def test_markdown_headings_skip_code_fences(tmp_path: Path) -> None:
    path = tmp_path / "doc.markdown"
    path.write_text(
        "intro line\n\n# Install\n\n```sh\n# not a heading\npip install x\n```\n\nSetup\n=====\n\nrun it\n",
        encoding="utf-8",
    )
    chunks = load_file(path, opts=OPTS)
    assert [(c.metadata.get("heading"), c.text) for c in chunks] == [
        (None, "intro line"),
        ("Install", "# Install\n\n```sh\n# not a heading\npip install x\n```"),
        ("Setup", "Setup\n\nrun it"),
    ]


def test_html_blocks_alt_text_and_boilerplate(tmp_path: Path) -> None:
    path = tmp_path / "page.htm"
    path.write_text(
        "<html><head><title> My  Page </title><style>p{}</style></head><body>"
        "<nav>Home | About</nav><header>Site banner</header>"
        "<p>First <b>bold</b> para.</p><div>Second<br>line</div><script>var x=1;</script>"
        "<table><tr><td>a</td><td>b</td></tr></table><img src='x.png' alt='A red bus'>"
        "<div style='display: none'>secret</div><footer>(c) 2024</footer></body></html>",
        encoding="utf-8",
    )
    [chunk] = load_file(path, opts=OPTS)
    assert chunk.metadata["title"] == "My Page"
    assert chunk.text == "First bold para.\n\nSecond line\n\na b\n\nA red bus"


def test_sidecar_captions(demo: Path, tmp_path: Path) -> None:
    for ext in (".txt", ".caption"):
        folder = tmp_path / ext.strip(".")
        folder.mkdir()
        image = folder / "dog.jpg"
        shutil.copyfile(demo / PHOTO, image)
        image.with_suffix(ext).write_text(" a dog\nin the park \n", encoding="utf-8")
        [chunk] = load_file(image, opts=OPTS)
        assert chunk.text == "a dog in the park" and chunk.metadata["caption_source"] == "sidecar"


# --------------------------------------------------------------------------- iter_files


def test_iter_files_skips_hidden_and_sorts(tmp_path: Path) -> None:
    for rel in ["b.txt", "a/z.md", "a/b/c.png", ".hidden.txt", ".git/config", "a/.cache/x.txt", "A.txt"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x", encoding="utf-8")
    found = [p.relative_to(tmp_path).as_posix() for p in iter_files(tmp_path)]
    assert found == ["A.txt", "a/b/c.png", "a/z.md", "b.txt"]


def test_iter_files_single_file_and_missing_root(tmp_path: Path) -> None:
    one = tmp_path / ".dotfile.txt"
    one.write_text("x", encoding="utf-8")
    assert list(iter_files(one)) == [one]  # named explicitly, so not skipped
    with pytest.raises(ConfigError):
        list(iter_files(tmp_path / "missing"))


def test_extension_sets() -> None:
    assert {".txt", ".md", ".markdown", ".html", ".htm", ".pdf"} == TEXT_EXTENSIONS
    assert {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"} == IMAGE_EXTENSIONS
