# The two commands of the README: `make run` and `make test`. Both build .venv first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PORT ?= 5000
VENV := .venv
BIN := $(VENV)/bin
# Quart 0.23 needs Python 3.13: python3.13 on PATH if it really runs, else pyenv's newest 3.13.
PYTHON313 := $(shell (python3.13 -c 'import sys' >/dev/null 2>&1 && command -v python3.13) \
	|| ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.13*/bin/python3.13 2>/dev/null | sort -V | tail -n 1)
# Debian packages (package:path) the tests drive as real processes, and the benchmarks' tools.
# The container tests (tests/containers) build and run the image with podman (runc, netavark,
# aardvark-dns and iptables are its runtime and network), bring compose.yaml up with
# docker-compose against podman's API, and build base images that cannot be pulled with
# mmdebstrap (tests/support/stand_in_images).
TEST_SYSTEM_PACKAGES := memcached:/usr/bin/memcached chromium:/usr/bin/chromium wrk:/usr/bin/wrk \
	docker-compose:/usr/bin/docker-compose podman:/usr/bin/podman runc:/usr/sbin/runc \
	netavark:/usr/lib/podman/netavark aardvark-dns:/usr/lib/podman/aardvark-dns \
	iptables:/usr/sbin/iptables mmdebstrap:/usr/bin/mmdebstrap
BENCH_SYSTEM_PACKAGES := memcached:/usr/bin/memcached wrk:/usr/bin/wrk valgrind:/usr/bin/valgrind
SYSTEM_PACKAGES ?= $(TEST_SYSTEM_PACKAGES)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help run test bench assets migrate lock system-packages clean

help:
	@echo "make run    serve the app on http://127.0.0.1:$(PORT) (SQLite, in-process cache)"
	@echo "make test   run the whole test suite (installs what it needs)"
	@echo "make bench  run the benchmarks and rewrite their results in docs/PERFORMANCE.md"

$(BIN)/.installed: pyproject.toml
	@if [ -z "$(PYTHON313)" ]; then \
		echo "error: Python 3.13 is required (Quart 0.23 needs it) and none was found." >&2; \
		echo "Install it (e.g. 'pyenv install 3.13') or put python3.13 on PATH." >&2; exit 1; fi
	@[ -x $(BIN)/python ] || $(PYTHON313) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $@

# htmx comes from npm (pinned by package-lock.json) and is served from static/, never a CDN.
VENDOR := static/vendor
ASSETS := $(VENDOR)/htmx.min.js

$(ASSETS): package.json package-lock.json
	@command -v npm >/dev/null || { echo "error: npm (Node.js) is required to install htmx." >&2; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	npm run --silent build

assets: $(ASSETS)

migrate: $(BIN)/.installed
	$(BIN)/alembic upgrade head

# requirements.lock, which the Dockerfile installs with --require-hashes: pyproject.toml's
# main dependencies (not the test extra) and theirs, each with the sha256 of every file
# PyPI has for it (so the Linux cp313 wheels the image needs are in). pip-compile keeps the
# pins already in the lock; it resolves for this Python (3.13). PIP_CONFIG_FILE and
# PIP_FIND_LINKS are cleared so that a machine's own pip settings (extra indexes, wheel
# folders) cannot leak into the lock: PyPI alone.
lock: $(BIN)/.installed
	PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= CUSTOM_COMPILE_COMMAND="make lock" \
		$(BIN)/pip-compile --quiet --generate-hashes --strip-extras \
		--no-emit-index-url --no-emit-find-links --output-file requirements.lock pyproject.toml

run: $(BIN)/.installed $(ASSETS)
	APP_ENV=$${APP_ENV:-development} $(BIN)/alembic upgrade head
	APP_ENV=$${APP_ENV:-development} $(BIN)/hypercorn --bind 127.0.0.1:$(PORT) 'app:create_app()'

system-packages:
	@missing=""; for entry in $(SYSTEM_PACKAGES); do \
		[ -x "$${entry#*:}" ] || missing="$$missing $${entry%%:*}"; done; \
	if [ -n "$$missing" ]; then \
		echo "Installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

test: $(BIN)/.installed $(ASSETS) system-packages
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest

# Not part of `make test`: minutes of load on real servers (PostgreSQL as for the tests).
# With the tutorial app beside the repository (PEER), its setup.sh makes (or finds) its
# virtualenv and the HTTP benchmark measures this app beside it first (bench/side_by_side.py).
PEER ?= ../shared/peers/tutorial
bench: $(BIN)/.installed $(ASSETS)
	@$(MAKE) --no-print-directory system-packages SYSTEM_PACKAGES="$(BENCH_SYSTEM_PACKAGES)"
	$(BIN)/python bench/cache_client.py
	$(BIN)/python bench/notes_fragments.py
	@if [ -d "$(PEER)" ]; then \
		printed=$$("$(PEER)/setup.sh") || exit 1; venv=$$(tail -n 1 <<< "$$printed"); \
		echo "$(BIN)/python bench/http_benchmark.py --peer $(PEER) --peer-venv $$venv"; \
		$(BIN)/python bench/http_benchmark.py --peer "$(PEER)" --peer-venv "$$venv"; \
	else \
		echo "No tutorial app at $(PEER) (PEER=...): the side-by-side is not run."; \
		$(BIN)/python bench/http_benchmark.py; \
	fi

clean:
	rm -rf $(VENV) node_modules instance test-output $(VENDOR)
