"""End to end in a real browser: ``mmrag ui`` on a free port, driven by headless Debian Chromium.

Needs the Debian ``chromium`` package (``/usr/bin/chromium``, or ``MMRAG_CHROMIUM``) and pip ``playwright``
(its driver only: no ``playwright install`` download). Screenshots go to ``MMRAG_SCREENSHOTS`` (default: a
temporary folder), so a person can look at what the test saw.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

CHROMIUM = os.environ.get("MMRAG_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# A plain text query runs the store's model set: hybrid (this store has BM25 vectors, no reranker), so
# the first card shows its fused score; a hit only one branch found shows "—" for the other.
SCORE = re.compile(r"dense (\d\.\d{4}|—) · sparse (\d+\.\d{4}|—) · fused \d\.\d{4} · rerank — · rank 1 → 1 =")

# The card of a PDF hit: "cited region · p. 1, bbox (x0, y0, x1, y1)" under the crop of its page.
CITED = re.compile(r"^cited region · p\. \d+, bbox \((\d+\.\d, ){3}\d+\.\d\)$")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    out = Path(os.environ.get("MMRAG_SCREENSHOTS") or tmp_path / "screenshots")
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture
def server(ui_store: Path, tmp_path: Path) -> Iterator[str]:
    """``mmrag ui`` as a user starts it, on a free port; stopped (and waited for) after the test."""
    port = _free_port()
    env = dict(os.environ, MMRAG_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mmrag.cli", "ui", "--store", str(ui_store), "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: nothing of it can outlive the test
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mmrag ui did not start: {(tmp_path / 'server.log').read_text()}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    # `mmrag ui` execs Streamlit, so stopping the process we started stopped the server itself
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)


def test_text_and_image_query_in_chromium(
    server: str, screenshots: Path, flickr_images: list[Path], ui_store: Path
) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (or set MMRAG_CHROMIUM)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
    t0 = time.monotonic()
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2000})
            page.goto(server)

            # text query: cards with highlighted query words and every score, then the pool charts
            page.get_by_label("Text query").fill("layout detection models")
            page.get_by_role("button", name="Search").click()
            page.get_by_text(SCORE).first.wait_for(timeout=60_000)  # the first query loads the encoder
            page.locator(".stVegaLiteChart svg").first.wait_for(timeout=20_000)  # charts drawn
            # Polled, not counted once: the browser may still be drawing the cards when the charts are
            # there (a CI run counted no <mark> yet, while every mark is in the page a moment later).
            expect = sync_api.expect
            expect(page.get_by_text("Top 10 of")).to_have_count(1, timeout=20_000)
            page.locator("mark", has_text=re.compile("layout", re.I)).first.wait_for(timeout=20_000)
            first_hit = page.get_by_text(re.compile(r"^#1 · text · .*layoutparser-paper-2p\.pdf"))
            expect(first_hit).to_have_count(1, timeout=20_000)
            for label in ("encode (ms)", "ann (ms)", "sparse (ms)", "fuse (ms)", "total (ms)"):
                expect(page.get_by_text(label)).to_have_count(1, timeout=20_000)
            # the first hit is a PDF chunk: its card shows the cited region, cropped from the rendered page
            caption = page.get_by_text(CITED).first
            caption.wait_for(timeout=20_000)
            region = page.locator("[data-testid='stImage']", has=page.get_by_text(CITED)).first
            crop = region.locator("img").element_handle(timeout=20_000)
            # decoded and wider than a thumbnail (polled: the browser may still be loading it)
            page.wait_for_function("i => i.complete && i.naturalWidth > 100", arg=crop, timeout=20_000)
            page.wait_for_timeout(500)
            page.screenshot(path=str(screenshots / "1-text-query.png"), full_page=True)
            first_card = page.get_by_text(re.compile(r"^#1 · text · "))
            card = page.locator("[data-testid='stVerticalBlock']", has=first_card).filter(has=region).last
            card.scroll_into_view_if_needed()
            card.screenshot(path=str(screenshots / "cited-region.png"))

            # inspect the first result: the whole chunk, its neighbours and metadata
            page.get_by_role("button", name="Inspect").first.click()
            page.get_by_text("Neighbours in").wait_for(timeout=20_000)
            # Streamlit scrolls inside its own container, so show the inspector by scrolling to it
            page.get_by_text("Whole chunk").scroll_into_view_if_needed()
            page.wait_for_timeout(300)
            page.screenshot(path=str(screenshots / "2-inspect.png"))

            # image query: a photo that is in the store comes back first, with cosine 1
            query = flickr_images[2]
            page.get_by_label("Text query").fill("")
            page.locator("input[type=file]").first.set_input_files(str(query))
            page.get_by_text(query.name[:6]).first.wait_for(timeout=10_000)  # upload registered
            page.get_by_role("button", name="Search").click()
            first = page.get_by_text(re.compile(r"^#1 · image · ")).first
            first.wait_for(timeout=30_000)
            assert query.name in first.inner_text()
            page.get_by_text(re.compile(r"dense 1\.0000 · sparse — · fused — · rerank —")).first.wait_for(
                timeout=20_000
            )
            page.locator("img").nth(2).wait_for(timeout=10_000)  # thumbnails
            page.locator(".stVegaLiteChart svg").first.wait_for(timeout=20_000)
            page.wait_for_timeout(500)
            page.get_by_text(re.compile(r"^Top \d+ of")).scroll_into_view_if_needed()
            page.wait_for_timeout(300)
            page.screenshot(path=str(screenshots / "3-image-query.png"))

            # the collection page: counts by modality and source, the encoder's vector
            page.get_by_text("Collection", exact=True).click()
            page.get_by_text("Chunks by source").wait_for(timeout=20_000)
            # in a data-grid cell, which Streamlit keeps hidden (drawn on a canvas): attached, not visible
            page.get_by_text("lite-untrained-v1").first.wait_for(state="attached", timeout=20_000)
            page.wait_for_timeout(500)
            page.screenshot(path=str(screenshots / "4-collection.png"), full_page=True)
        finally:
            browser.close()
    assert time.monotonic() - t0 < 90
