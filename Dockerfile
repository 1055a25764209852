# The event-analytics service: gunicorn with uvicorn workers (boot/docker-run.sh).
FROM python:3.11.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system app && useradd --system --gid app --home-dir /app --shell /usr/sbin/nologin app
WORKDIR /app

# Dependencies first: this layer is rebuilt only when requirements.txt changes.
COPY requirements.txt ./
RUN pip install -r requirements.txt

COPY src ./src
COPY boot/docker-run.sh ./boot/docker-run.sh
RUN chmod 0755 boot/docker-run.sh
# The default export folder (RAW_EXPORT_URL / PROCESSED_EXPORT_URL), a volume in Compose.
RUN mkdir -p /app/exports && chown app:app /app/exports

USER app
ENV HOST=0.0.0.0 PORT=8000
EXPOSE 8000

# No curl in the slim image: Python asks /healthz (liveness, no database round trip).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\", \"8000\")}/healthz', timeout=4)"

# Exec form, and the script execs gunicorn: gunicorn is PID 1 and gets `docker stop`'s SIGTERM.
CMD ["./boot/docker-run.sh"]
