# Two entry points: `make lab` (the whole CDN end to end) and `make test`.
# Each creates or reuses .venv and installs what it needs, Debian packages included.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
DEBIAN_PACKAGES := nginx wrk sqlite3 iproute2 procps curl postgresql prometheus debootstrap systemd-container xfsprogs openssh-client nodejs ffmpeg
export PATH := $(CURDIR)/$(VENV)/bin:/usr/sbin:/sbin:$(PATH)

.PHONY: all lab test lint bench debs venv clean

all: test

# Debian packages: installed only when one is missing, so a warm machine pays nothing.
debs:
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "need root to install:$$missing" >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  systemctl disable --now nginx >/dev/null 2>&1 || true; \
	fi

$(VENV)/.stamp: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[infra,dev]'
	@touch $@

venv: $(VENV)/.stamp

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: debs venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q

lab: debs venv
	$(VENV)/bin/cdnlab lab up

bench: debs venv
	$(VENV)/bin/python bench/edge_vs_nginx.py

clean:
	rm -rf $(VENV) lab/out build dist *.egg-info src/*.egg-info
