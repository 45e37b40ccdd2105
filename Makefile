# collapse-monitor developer entry points.
#
#   make demo    create .venv (if needed), install the package, run `collapse-monitor demo`
#   make test    create/update .venv with the dev extras, install the real servers the tests
#                talk to (apt-get), run the whole suite
#   make lint    ruff check + ruff format --check + mypy
#   make bench   speed, detection-quality, retrain-noise, external-chain, fingerprint and
#                coverage-share calibration benchmarks
#   make clean   caches and build outputs (distclean: also .venv and local run outputs)
#
# Both `demo` and `test` do all set-up themselves on a fresh Debian machine with Python 3.11.
# Re-running is cheap: the pip step is skipped while a stamp keyed on pyproject.toml's hash (and
# the TORCH_SPEC / DEV_EXTRAS knobs) exists in .venv (changing either triggers a reinstall).
# Knobs: PYTEST_ARGS="-m 'not e2e' -x", SERVERS=0, DEMO_ARGS=..., PYTHON=/path/to/python3.11,
# TORCH_INDEX_URL= (empty: no PyTorch CPU index).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
# torch first, pinned: the CPU build of 2.13.0 lies on disk; an unpinned torch (or any range
# that admits a newer release) pulls a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
# PyTorch's CPU index (its 2.13.0+cpu sorts above PyPI's CUDA 2.13.0; a local wheel of it, as on
# this project's machines, still wins); empty: PyPI and pip's own configuration only
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu
TORCH_INDEX := $(if $(strip $(TORCH_INDEX_URL)),--extra-index-url $(TORCH_INDEX_URL))
DEV_EXTRAS ?= dev,lightning,transformers
PYTEST_ARGS ?=
DEMO_ARGS ?=

# The stamps are keyed on what decides the install: pyproject.toml, the torch pin and index and
# (for the dev stamp) the extras, so `make test DEV_EXTRAS=dev` or a new TORCH_SPEC reinstalls.
# (shq: a value single-quoted for the shell, its own single quotes escaped, as in a marker
# `torch==2.13.0; python_version>='3.11'`)
shq = '$(subst ','\'',$(1))'
INSTALL_KEY = $(shell { cat pyproject.toml; printf '%s|' $(1); } 2>/dev/null | sha256sum | cut -c1-16)
BASE_STAMP := $(VENV)/.installed-base-$(call INSTALL_KEY,$(call shq,$(TORCH_SPEC)) $(call shq,$(TORCH_INDEX_URL)))
DEV_STAMP := $(VENV)/.installed-dev-$(call INSTALL_KEY,$(call shq,$(TORCH_SPEC)) $(call shq,$(TORCH_INDEX_URL)) $(call shq,$(DEV_EXTRAS)))

# Debian packages that provide the real servers used by the integration tests, and the
# binaries whose presence means they are installed.
SERVER_PACKAGES := prometheus prometheus-pushgateway prometheus-alertmanager chromium
SERVER_BINARIES := prometheus promtool prometheus-pushgateway prometheus-alertmanager amtool chromium

# root runs apt-get directly; anyone else goes through sudo when it exists.
SUDO := $(shell [ "$$(id -u)" = 0 ] || command -v sudo 2>/dev/null)

.PHONY: help venv venv-dev demo test servers lint format bench bench-speed bench-detection bench-noise bench-external bench-fingerprint bench-shares clean distclean

help:
	@awk 'NR >= 3 && !/^#/ {exit} NR >= 3 {sub(/^# ?/, ""); print}' Makefile

# --- virtual environment ----------------------------------------------------------------------

$(PY):
	@test -n "$(PYTHON)" || { echo "error: python3.11 not found" >&2; exit 1; }
	@if ! $(PYTHON) -c 'import ensurepip, venv' >/dev/null 2>&1; then \
	  v=$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	  echo "venv: $(PYTHON) lacks ensurepip; installing python$$v-venv with apt-get"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "python$$v-venv"; \
	fi
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Base install: the package and its runtime dependencies (what `make demo` needs).
$(BASE_STAMP): | $(PY)
	$(PIP) install --quiet "$(TORCH_SPEC)" $(TORCH_INDEX)
	$(PIP) install --quiet -e .
	@# a base install may have changed torch under the dev install: its stamp no longer holds
	@rm -f $(VENV)/.installed-base-* $(VENV)/.installed-dev-*
	@touch $@

# Dev install: the package with the dev extras and the optional training integrations (what
# the test suite needs). It is a superset of the base install, so it also marks that as done.
$(DEV_STAMP): | $(PY)
	$(PIP) install --quiet "$(TORCH_SPEC)" $(TORCH_INDEX)
	$(PIP) install --quiet -e ".[$(DEV_EXTRAS)]"
	@rm -f $(VENV)/.installed-dev-* $(VENV)/.installed-base-*
	@touch $@ $(BASE_STAMP)

venv: $(BASE_STAMP)  ## .venv with the package installed (editable)
venv-dev: $(DEV_STAMP)  ## .venv with the package and the dev/lightning/transformers extras

# --- user-facing targets ----------------------------------------------------------------------

demo: $(BASE_STAMP)
	$(VENV)/bin/collapse-monitor demo $(DEMO_ARGS)

# SERVERS=0 skips installing the server packages (unit tests without root or apt-get: with
# PYTEST_ARGS="-m 'not e2e'"; outside CI the server tests then skip, under CI=true they fail)
SERVERS ?= 1
test: $(if $(filter 1,$(SERVERS)),servers) $(DEV_STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# Installs the server packages once; returns at once when every binary is already on PATH.
servers:
	@missing=""; \
	for b in $(SERVER_BINARIES); do command -v "$$b" >/dev/null 2>&1 || missing="$$missing $$b"; done; \
	if [ -z "$$missing" ]; then echo "servers: all present ($(SERVER_BINARIES))"; exit 0; fi; \
	echo "servers: missing:$$missing -> apt-get install $(SERVER_PACKAGES)"; \
	if [ "$$(id -u)" != 0 ] && [ -z "$(SUDO)" ]; then \
	  echo "error: installing$$missing needs root or sudo" >&2; exit 1; \
	fi; \
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq; \
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SERVER_PACKAGES); \
	for b in $(SERVER_BINARIES); do \
	  command -v "$$b" >/dev/null 2>&1 || { echo "error: $$b still missing after apt-get install" >&2; exit 1; }; \
	done

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy collapse_monitor

format: $(DEV_STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# --- benchmarks (measured here, never asserted as wall-clock in tests) ---------------------------

bench: bench-speed bench-detection bench-noise bench-external bench-fingerprint bench-shares

bench-speed: $(DEV_STAMP)
	@test -f benchmarks/speed.py || { echo "error: benchmarks/speed.py is not written yet" >&2; exit 1; }
	$(PY) benchmarks/speed.py

bench-detection: $(DEV_STAMP)
	@test -f benchmarks/detection.py || { echo "error: benchmarks/detection.py is not written yet" >&2; exit 1; }
	$(PY) benchmarks/detection.py --all-findings

bench-noise: $(DEV_STAMP)
	$(PY) benchmarks/retrain_noise.py

bench-shares: $(DEV_STAMP)
	$(PY) benchmarks/shares.py

bench-external: $(DEV_STAMP)
	$(PY) benchmarks/external_chains.py
	$(PY) benchmarks/external_chains.py --generations 20

bench-fingerprint: $(DEV_STAMP)
	$(PY) benchmarks/fingerprint.py

# --- housekeeping -----------------------------------------------------------------------------

clean:
	rm -rf build dist *.egg-info .pytest_cache .hypothesis .mypy_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +

# Also removes the virtual environment and what local runs wrote into the repository
# (the embedded MLflow store, the monitor's local history, demo output).
distclean: clean
	rm -rf $(VENV) mlflow.db mlruns mlartifacts .collapse_monitor collapse-demo-out
