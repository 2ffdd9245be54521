# One image for the three services; compose picks the command. Built from the same pinned pyproject.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY deploy ./deploy
RUN pip install . && useradd --system --uid 10001 loyalty
USER loyalty

EXPOSE 8000 8001 8002
CMD ["python", "-m", "services.ingest", "serve"]
