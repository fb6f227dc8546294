# The mmrag image: `mmrag serve` (REST API) by default, `mmrag ui` for the Streamlit UI.
# Build: docker compose build (or docker build -t mmrag:0.1.0 .). The `lite` encoder's weights
# come inside pip packages, so the image runs offline.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    MMRAG_THREADS=2

WORKDIR /app
# torch first, pinned, so the project's ranges never pull another build
RUN pip install "torch==2.14.1" "torchvision==0.29.1"
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install ".[server,api,ui,pdf]" \
 && useradd --create-home --uid 10001 mmrag \
 && mkdir -p /uploads && chown mmrag /uploads

USER mmrag
EXPOSE 8000 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"
ENTRYPOINT ["mmrag"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
