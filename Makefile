# Two commands do all set-up on a fresh machine:
#   make demo   venv + install, train the lite heads and the reranker if there are no checkpoints,
#               ingest the sample folder and a Flickr8k slice, record the reranker as the store's
#               default, run sample queries through both stages
#   make test   venv + install, lint, type-check, run the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MMRAG := $(VENV)/bin/mmrag
export MMRAG_DATA ?= $(abspath ../shared/data)
export MMRAG_STORE ?= ./.mmrag
DEMO_IMAGES ?= 200
CKPT ?= checkpoints/lite-flickr8k
# The demo's reranker: a short fixed-step run on a SciFact slice (see `make bench` for the full one).
DEMO_RERANKER ?= checkpoints/reranker-demo
# auto: bf16 autocast where the CPU has bf16 instructions (~0.57x the training time, same table: docs/search.md).
# 4 of MiniLM's 6 layers, the bottom one frozen: ~0.77x the training time and ~0.69x the time per rerank
# of the 6-layer run, its fused nDCG@10 as good on two seeds (docs/search.md)
DEMO_RERANKER_ARGS ?= --docs 800 --steps 120 --train-precision auto --layers 4 --freeze-layers 1

.PHONY: install sysdeps sysdeps-ocr demo test lint bench clean

# System packages from Debian, as command:package+package: tesseract (OCR of scans), chromium (the
# UI's browser test), docker-compose (validates docker-compose*.yml). Installed when missing and we
# may (root or sudo); otherwise what needs them skips and says why. `make demo` needs OCR only, so it
# does not wait for a browser to install.
SYSDEPS_OCR := tesseract:tesseract-ocr+tesseract-ocr-eng
SYSDEPS_ALL := $(SYSDEPS_OCR) chromium:chromium docker-compose:docker-compose
define install_sysdeps
	@missing=""; for dep in $(1); do \
	  command -v "$${dep%%:*}" >/dev/null || missing="$$missing $$(tr + ' ' <<< "$${dep#*:}")"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo -n"; else \
	  echo "sysdeps: cannot install$$missing (not root, no sudo); what needs them will skip"; exit 0; fi; \
	echo "sysdeps: installing$$missing"; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null \
	  || echo "sysdeps: apt-get failed; what needs$$missing will skip"
endef

sysdeps:
	$(call install_sysdeps,$(SYSDEPS_ALL))

sysdeps-ocr:
	$(call install_sysdeps,$(SYSDEPS_OCR))

# What `make demo` needs: the project with its runtime extras (`[all]`).
$(VENV)/.runtime: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, from the wheels on this disk; any other version downloads GBs.
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[all]'
	touch $@

# What the tests, linters and benchmarks add (`[dev]`: pytest, ruff, mypy, ray, the peers' stacks, ...):
# ~25 s more of a cold install, which `make demo` does not wait for.
$(VENV)/.installed: $(VENV)/.runtime
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: sysdeps $(VENV)/.installed

demo: sysdeps-ocr $(VENV)/.runtime
	@if [ -f "$(CKPT)/mmrag.json" ]; then echo "demo: using the trained checkpoint $(CKPT)"; else \
	  echo "demo: no trained checkpoint at $(CKPT), so training the lite heads on Flickr8k train now"; \
	  echo "      (tower features are extracted once and cached in .cache/features: ~1-2 min the first time)"; \
	  $(MMRAG) train --dataset "$(MMRAG_DATA)/flickr8k" --out "$(CKPT)"; fi
	@if [ -f "$(DEMO_RERANKER)/mmrag_rerank.json" ]; then echo "demo: using the trained reranker $(DEMO_RERANKER)"; else \
	  echo "demo: no reranker at $(DEMO_RERANKER), so training one on a SciFact slice now (fixed steps)"; \
	  $(MMRAG) train-reranker --out "$(DEMO_RERANKER)" $(DEMO_RERANKER_ARGS); fi
	$(MMRAG) ingest "$(MMRAG_DATA)/ingest_demo" --model "$(CKPT)" --reranker "$(DEMO_RERANKER)"
	$(MMRAG) ingest "$(MMRAG_DATA)/flickr8k/images" --files-from "$(MMRAG_DATA)/flickr8k/splits/dev.txt" \
		--limit $(DEMO_IMAGES) --captions "$(MMRAG_DATA)/flickr8k/captions.jsonl" --model "$(CKPT)"
	$(MMRAG) info
	@echo "demo: plain searches run the store's model set: hybrid (dense + BM25), then the reranker;"
	@echo "      each hit shows every stage's score and, with (was N), the rank the reranker moved it from"
	$(MMRAG) search "dense passage retrieval" --k 5
	$(MMRAG) search "how are documents split into chunks before indexing" --k 5
	@echo "demo: text -> image through the dual encoder alone (no BM25 over the captions, no text reranker):"
	$(MMRAG) search "a dog runs through the snow" --k 3 --modality image --dense-only --no-rerank

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest -q

# The benchmarks' reranker: a 6-layer teacher (the `train-reranker` default recipe), then a 4-layer
# student distilled from it (bottom layer frozen), as the soup of two seeds: ~30% faster per query;
# one seed alone matched the teacher's val-fold nDCG@10 only within seed noise, the soup beat it on
# every measure (docs/search.md, BENCHMARKS.md "Reranker depth").
RERANKER_TEACHER ?= checkpoints/reranker-scifact-l6
RERANKER ?= checkpoints/reranker-scifact
RERANKER_ARGS ?= --layers 4 --freeze-layers 1 --soup 2

# Regenerates benchmarks/results/*.json, the PNG plots and BENCHMARKS.md (hours on 2 cores: the
# 1M-point scale run and the training sweeps dominate). The peers (LangChain, Haystack) come with
# the dev extra (it includes `bench`).
bench: install
	@if [ ! -f "$(RERANKER_TEACHER)/mmrag_rerank.json" ]; then echo "bench: training the teacher ($(RERANKER_TEACHER))"; \
	  $(MMRAG) train-reranker --out "$(RERANKER_TEACHER)"; fi
	@if [ ! -f "$(RERANKER)/mmrag_rerank.json" ]; then echo "bench: distilling the reranker ($(RERANKER))"; \
	  $(MMRAG) train-reranker --out "$(RERANKER)" --base "$(RERANKER_TEACHER)" --teacher "$(RERANKER_TEACHER)" \
	    $(RERANKER_ARGS); fi
	$(PY) benchmarks/bench_query.py
	$(PY) benchmarks/bench_scale.py
	$(PY) benchmarks/bench_rerank.py --reranker "$(RERANKER)" --threads 1
	$(PY) benchmarks/bench_rerank_depth.py --reranker "$(RERANKER_TEACHER)" "$(RERANKER)"
	$(PY) benchmarks/bench_peers.py
	$(PY) benchmarks/bench_api_load.py
	$(PY) benchmarks/bench_api_concurrency.py --seconds 6 --base-docs 300 --ingest-docs 100 --reranker "$(RERANKER)"
	$(PY) benchmarks/bench_retriever_concurrency.py --seconds 6 --repeats 3
	$(PY) benchmarks/bench_text_path.py --ndcg
	$(PY) benchmarks/bench_edge_threads.py --sizes 1000 100000 --search-threads 1 2 --repeats 3
	$(PY) benchmarks/bench_cli_start.py --repeats 5
	$(PY) benchmarks/bench_cold_demo.py --repeats 3
	$(PY) benchmarks/train_sweep.py
	$(PY) benchmarks/train_sweep.py --base lite:efficientnet_lite2 --out benchmarks/results/train_sweep_lite2.json
	$(PY) benchmarks/train_extras.py joint
	$(PY) benchmarks/train_extras.py unfreeze
	$(PY) benchmarks/train_extras.py loop
	$(PY) benchmarks/bench_ingest.py --images 1000 --abstracts 5183 --repeats 3
	$(PY) benchmarks/bench_ingest_rss.py
	$(PY) benchmarks/bench_image_path.py
	$(PY) benchmarks/bench_quantization.py --repeats 3
	$(PY) benchmarks/bench_quantization.py --points 1000000 --crops 3 --windows --threads 2 --repeats 3 \
		--out benchmarks/results/quantization_1m.json
	$(PY) benchmarks/sweep_image_tower.py
	$(PY) benchmarks/report.py

clean:
	rm -rf $(VENV) .mmrag .pytest_cache .mypy_cache .ruff_cache
