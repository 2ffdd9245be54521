# Loyalty Funnel: developer entry points. `make help` lists them.
# Everything installs what it needs on a fresh machine: the virtualenv from pyproject.toml, Kafka's jars
# from Maven Central (deploy/kafka/pom.xml), PostgreSQL from Debian's packages when missing.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# The interpreter the virtualenv is made from: Debian's python3.11, built with profile-guided and link-time
# optimisation, when it can make one (its venv module) and build extensions (its headers); otherwise the first
# python3.11 on the PATH (README.md, "Dependencies"). `?=` keeps it unexpanded: the check runs only when a
# recipe makes the virtualenv, not on every make.
PYTHON ?= $(shell /usr/bin/python3.11 -c 'import ensurepip, os, sys, sysconfig; \
	sys.exit(not os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null \
	&& echo /usr/bin/python3.11 || echo python3.11)
VENV := .venv
PY := $(VENV)/bin/python
# pip re-runs only when pyproject.toml changes.
INSTALL_STAMP := $(VENV)/.install-stamp
KAFKA_LIBS := .run/kafka-libs
KAFKA_STAMP := $(KAFKA_LIBS)/.make-stamp
DEVSTACK := $(PY) -m deploy.devstack
# Segment's own JavaScript libraries (analytics.js, analytics-node), unchanged, for the end-to-end tests.
JS_DIR := tests/js
JS_STAMP := $(JS_DIR)/node_modules/.make-stamp
# Segment's Java server library (analytics-java), unchanged, for the end-to-end tests: from Maven Central.
JAVA_DIR := tests/java
JAVA_STAMP := $(JAVA_DIR)/libs/.make-stamp
# The browser the analytics.js tests drive: Debian's, never a browser build downloaded by a tool.
CHROMIUM := /usr/bin/chromium

.PHONY: help install lock kafka-jars postgres js-clients java-clients c-compiler chromium up down status lint test demo bench chaos compiled

help:
	@echo "make install     virtualenv in $(VENV) with the project and its dev tools (from requirements-dev.lock),"
	@echo "                 and the segmenter's rules, per-event service layer and event decoding, and ingest's Segment"
	@echo "                 reader and mapping, compiled by mypyc into .build/"
	@echo "make lock        regenerate requirements.lock and requirements-dev.lock after changing pyproject.toml"
	@echo "make up          start Kafka, Postgres, an SMTP sink and the three services (returns when ready)"
	@echo "make status      what is running"
	@echo "make down        stop everything make up started"
	@echo "make demo        make up, then replay a simulated storefront and print the funnel report"
	@echo "make lint        ruff (check, format), mypy and the import layering (lint-imports)"
	@echo "make test        lint, then every test against a real Kafka, Postgres and SMTP server"
	@echo "make bench       the benchmark (own stack; BENCH_RUNS=3 runs per figure)"
	@echo "make chaos       kill each component in turn under load; nothing acknowledged may be lost (BROKERS=3)"

install: $(INSTALL_STAMP) compiled

# Every package comes from requirements-dev.lock, pinned with hashes (indirect ones included); the project
# itself is installed on top without resolving anything. `pip check` catches a lock that pyproject.toml
# has outgrown (a dependency added without `make lock`).
$(INSTALL_STAMP): pyproject.toml requirements-dev.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check -q --require-hashes -r requirements-dev.lock
	$(VENV)/bin/pip install --disable-pip-version-check -q --no-deps -e .
	$(VENV)/bin/pip check --disable-pip-version-check \
		|| { echo "requirements-dev.lock does not cover pyproject.toml: run 'make lock'"; exit 1; }
	touch $@

# The segmenter's rules, per-event service layer and event decoding, and ingest's reading and mapping of
# Segment calls and Shopify webhooks, compiled to C extensions (gcc, Python's headers): about a sixth less of
# the segmenter's CPU an event, a third less of ingest's CPU mapping a Segment call, a fifth fewer
# instructions mapping a webhook (bench/README.md, rounds 62 and 63). A package uses them only while they
# match the service's sources and shared/'s, so an edit runs interpreted until this runs again
# (shared/compiled.py), which rebuilds only when the build's manifest no longer matches the sources. Without a
# C compiler everything still runs, interpreted: `make up` goes on, and `make test` says so
# (tests/unit/test_compiled_modules.py).
compiled: $(INSTALL_STAMP) | c-compiler
	$(PY) -m shared.compiled \
		|| echo "warning: could not compile the segmenter's rules, service layer and event decoding and ingest's Segment and Shopify mapping (a C compiler and Python's headers are needed); they run interpreted"

# Regenerate the lock files after changing a dependency in pyproject.toml (with uv, one of the dev tools).
# requirements-dev.lock: the services' packages plus the tests' and tools'; requirements.lock: the services'
# alone (the Docker image), held to the same versions.
UV := $(VENV)/bin/uv
UV_COMPILE := $(UV) pip compile pyproject.toml --python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes --quiet \
	--no-header
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	test -x $(UV) || $(VENV)/bin/pip install -q "$$(grep -o '"uv==[^"]*"' pyproject.toml | tr -d '"')"
	$(UV_COMPILE) --extra dev -o requirements-dev.lock.new
	$(UV_COMPILE) --constraint requirements-dev.lock.new -o requirements.lock.new
	for f in requirements.lock requirements-dev.lock; do \
		{ \
		echo "# $$f: every package, indirect ones included, pinned with its hashes."; \
		echo "# Generated from pyproject.toml by 'make lock' (uv pip compile for CPython 3.11 on x86_64"; \
		echo "# Linux, with hashes); do not edit by hand. After changing a dependency in pyproject.toml, run"; \
		echo "# 'make lock' and commit pyproject.toml with requirements.lock and requirements-dev.lock."; \
		echo "# 'make install' installs requirements-dev.lock (pip --require-hashes); the Dockerfile, requirements.lock."; \
		cat $$f.new; \
		} > $$f && rm $$f.new; \
	done

kafka-jars: $(KAFKA_STAMP)

# Order-only on install: reinstalling Python packages does not change which jars Kafka needs.
$(KAFKA_STAMP): deploy/kafka/pom.xml | $(INSTALL_STAMP)
	$(DEVSTACK) kafka-jars
	touch $@

postgres: | $(INSTALL_STAMP)
	$(DEVSTACK) postgres-binaries

js-clients: $(JS_STAMP)

# npm ci re-runs only when the lock file changes; it installs exactly what package-lock.json pins.
$(JS_STAMP): $(JS_DIR)/package-lock.json $(JS_DIR)/package.json
	cd $(JS_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

java-clients: $(JAVA_STAMP)

# Maven copies exactly what pom.xml pins (and its dependencies) into tests/java/libs/, emptied first so
# that a version pom.xml no longer names is not left on the classpath.
$(JAVA_STAMP): $(JAVA_DIR)/pom.xml
	rm -rf $(JAVA_DIR)/libs
	mvn -q -B -f $(JAVA_DIR)/pom.xml dependency:copy-dependencies -DoutputDirectory=libs
	touch $@

# The C compiler the compiled modules need: Debian's gcc, installed as root when missing, as chromium is
# (Python's headers come with the interpreter: pyenv's and python.org's builds install them).
c-compiler:
	@if ! command -v gcc >/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc libc6-dev; \
		else \
			echo "no gcc: the segmenter's rules will run interpreted (as root: apt-get install gcc libc6-dev)" >&2; \
		fi; \
	fi

chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
		if [ "$$(id -u)" != 0 ]; then \
			echo "Debian's chromium is missing: as root, apt-get install -y chromium" >&2; exit 1; \
		fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	fi

up: install kafka-jars postgres
	$(DEVSTACK) up

# No install here: without a virtualenv nothing can have been started.
down:
	@if [ -x $(PY) ]; then $(DEVSTACK) down; else echo "no $(VENV): nothing to stop"; fi

status:
	@if [ -x $(PY) ]; then $(DEVSTACK) status; else echo "no $(VENV): nothing running"; fi

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy shared services deploy tests bench
	$(VENV)/bin/lint-imports

test: install kafka-jars postgres js-clients java-clients chromium
	$(MAKE) --no-print-directory lint
	$(PY) -m tests.suites

demo: up
	$(PY) -m deploy.demo

# Not part of `make test`: it starts a stack of its own under .run/bench/ and takes ~15 minutes.
BENCH_RUNS ?= 3
bench: install kafka-jars postgres
	$(PY) -m bench run --runs $(BENCH_RUNS)

# Not part of `make test`: a stack of its own under .run/chaos/ (free ports), a steady load while each
# service, a broker and Postgres are SIGKILLed in turn; exits non-zero if anything acknowledged was lost or
# duplicated. BROKERS=3 runs it on a three-broker KRaft cluster.
CHAOS_DURATION ?= 180
CHAOS_RATE ?= 40
BROKERS ?= 1
chaos: install kafka-jars postgres
	$(PY) -m deploy.chaos run --duration $(CHAOS_DURATION) --rate $(CHAOS_RATE) --brokers $(BROKERS)
