# Two commands set everything up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Machines of this workplace keep a CPU torch wheel on disk; elsewhere pip uses PyPI.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels)
PIP := $(PY) -m pip install -q --disable-pip-version-check $(FIND_LINKS) -c constraints.txt

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) --upgrade pip setuptools
	$(PIP) torch==2.13.0
	$(PIP) -e '.[dev,hub,data]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/tritondsl check models/*.tdsl examples/*.tdsl
	$(VENV)/bin/tritondsl compile models/resnet18.tdsl -o /tmp/tritondsl_resnet18.py
	$(VENV)/bin/tritondsl summary models/resnet18.tdsl --batch 1

test: install
	$(PY) -m ruff check .
	$(PY) -m pytest

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: install
	$(PY) benchmarks/bench_frontend.py

clean:
	rm -rf $(VENV) build *.egg-info
