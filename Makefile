# emulab: `make demo` sets up and runs the main job, `make test` sets up and runs the tests.
# Both go through `make setup`, which is idempotent and returns at once when nothing changed.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMPS := .setup-stamps
PYTEST_ARGS ?=

.PHONY: setup demo test lint bench realkernel oai clean-venv
.DEFAULT_GOAL := help

help:
	@echo "make demo   - install everything, start the paper topology and self-check it"
	@echo "make test   - install everything and run the test suite"
	@echo "make setup  - only install (Debian packages + .venv)"
	@echo "make lint   - ruff"
	@echo "make bench  - run every benchmark in quick mode"
	@echo "make realkernel - the SCTP/netem/kernel-OVS tests and RSPLIB interop in a qemu VM"
	@echo "make oai    - build OpenAirInterface's 4G softmodems (cached in /opt/emulab-oai)"

setup: $(STAMPS)/pip

$(STAMPS)/debian: scripts/install-debian.sh
	bash scripts/install-debian.sh
	@mkdir -p $(STAMPS) && touch $@

# --system-site-packages so the venv sees Debian's Mininet (python3-mininet).
$(PY): $(STAMPS)/debian
	/usr/bin/python3 -m venv --system-site-packages $(VENV)
	@touch $@

$(STAMPS)/pip: $(PY) pyproject.toml setup.py rserpool/_selector.c
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	@mkdir -p $(STAMPS) && touch $@

demo: setup
	$(VENV)/bin/emulab start paper-topology --self-check

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	@for b in benchmarks/[!_]*.py; do echo "== $$b"; $(PY) $$b --quick || exit 1; done

# The tests marked `realkernel` (SCTP, sch_netem, the openvswitch datapath), inside Debian's kernel
# under qemu: the same selection as the lane in .ci/run.
realkernel: setup
	bash scripts/realkernel/run.sh -- -m realkernel

# OpenAirInterface's 4G softmodems from pinned sources; cached, so a second run returns at once.
# OAI_SOURCES=DIR (offline tarballs), OAI_PREFIX_ROOT, OAI_MARCH, OAI_JOBS, OAI_USRP=0: see the script.
oai:
	python3 scripts/build_oai.py

clean-venv:
	rm -rf $(VENV) $(STAMPS) build *.egg-info
