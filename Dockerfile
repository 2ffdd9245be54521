# One image for the three services; compose picks the command.
# An exact, patched CPython (3.11 receives security fixes only): bump the patch version when a new one is
# out, as a security update.
FROM python:3.11.14-slim-bookworm AS compiled

# The segmenter's rules and service layer, and ingest's Segment and Shopify mapping, compiled by mypyc
# (shared/compiled.py, what `make install` does) in a stage of its own: the C compiler and the dev tools
# (mypy) stay out of the image, which takes only the built modules.
ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements-dev.lock ./
RUN pip install --require-hashes -r requirements-dev.lock
COPY pyproject.toml ./
COPY shared ./shared
COPY services ./services
RUN python -m shared.compiled

FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

# Every package from the lock, pinned with its hashes (indirect ones included; no test or dev tools), in a
# layer of its own so a code change does not reinstall them. Regenerate the lock with `make lock`.
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock

COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY deploy ./deploy
# Used only while they match the sources copied above (shared/compiled.py checks each one's SHA-256).
COPY --from=compiled /app/.build/mypyc ./.build/mypyc
RUN pip install --no-deps . && useradd --system --uid 10001 loyalty
USER loyalty

EXPOSE 8000 8001 8002
CMD ["python", "-m", "services.ingest", "serve"]
