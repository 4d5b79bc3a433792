# tunelab's server on CPU. Build from the checkout: docker build -t tunelab .
# A model is not baked in: mount one at /model, or derive: FROM tunelab + COPY runs/x/best /model
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1

# The CPU torch wheel first, pinned as scripts/install.py pins it ([tool.tunelab.install] in
# pyproject.toml; a test keeps the two equal), so installing tunelab cannot pull a CUDA build.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install . && useradd --create-home --uid 10001 tunelab
USER 10001

EXPOSE 8000
# /health needs no key; python instead of curl, which the slim image does not have.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
# The API key comes from the environment at run time: docker run -e TUNELAB_SERVE_API_KEY=... -v ...:/model
CMD ["tunelab", "serve", "/model", "--host", "0.0.0.0", "--port", "8000"]
