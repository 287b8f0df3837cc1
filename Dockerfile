# syntax=docker/dockerfile:1
# The production image: `docker build -t tasklist .`, or `docker compose up --build` (compose.yaml).
# Three stages, so the image holds neither Node.js nor pip's build leftovers.
ARG PYTHON_VERSION=3.13

# 1. htmx, pinned by package-lock.json: the Makefile's assets rule, in a throwaway stage.
FROM node:24-bookworm-slim AS assets
WORKDIR /assets
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error && npm run --silent build

# 2. The Python dependencies, in a venv of their own, from the hash-pinned lock alone:
#    --require-hashes refuses any file whose sha256 is not in requirements.lock, --no-deps
#    installs nothing the lock does not name, --only-binary needs no compiler (slim has none).
#    Only the lock is copied, so this layer is rebuilt when the dependencies change, not the code.
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
COPY requirements.lock /tmp/requirements.lock
RUN /opt/venv/bin/pip install --require-hashes --no-deps --only-binary=:all: \
      -r /tmp/requirements.lock

# 3. The runtime: the venv, then the code. The project is not pip-installed: the app finds
#    templates/ and static/ next to app/, so everything sits in WORKDIR as in the repository.
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
# PORT is the PaaS convention the CMD binds to; WEB_CONCURRENCY the worker count;
# unbuffered output so log lines reach `docker logs` at once.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    APP_ENV=production \
    PORT=8000 \
    WEB_CONCURRENCY=2
# A fixed numeric id, so `USER` needs no passwd lookup and volume ownership is predictable.
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --no-create-home --shell /usr/sbin/nologin app
WORKDIR /srv
COPY --from=build /opt/venv /opt/venv
COPY alembic.ini hypercorn.toml ./
COPY alembic/ alembic/
COPY templates/ templates/
# static/ is hand-written (css, favicon); static/vendor/ is left out by .dockerignore and
# filled from the assets stage, so the image serves exactly the locked htmx.
COPY static/ static/
COPY --from=assets /assets/static/vendor/ static/vendor/
COPY app/ app/
# Compiled once here (as root), since the app user cannot write __pycache__ at run time.
RUN python -m compileall -q app
USER 10001:10001
EXPOSE 8000
# slim has no curl: ask /healthz (liveness, touches neither database nor cache) with urllib;
# an error or a non-2xx answer raises, so the check exits 1.
HEALTHCHECK --interval=30s --timeout=3s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=2)"]
# `sh -c` expands PORT and WEB_CONCURRENCY; `exec` makes app.serve's master (hypercorn's CLI
# and workers; it replaces a worker that dies) PID 1, so it gets the SIGTERM of `docker stop`
# and lets its workers drain (graceful_timeout in hypercorn.toml).
# Migrations are not run here: compose.yaml's migrate service (or a release phase) does that.
CMD ["sh", "-c", "exec python -m app.serve --config hypercorn.toml --bind 0.0.0.0:${PORT} --workers ${WEB_CONCURRENCY:-2} 'app:create_app()'"]
