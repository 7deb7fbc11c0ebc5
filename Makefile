# Two commands set everything up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Machines of this workplace keep a CPU torch wheel on disk; elsewhere pip uses PyPI.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels)
PIP := $(PY) -m pip install -q --disable-pip-version-check $(FIND_LINKS) -c constraints.txt

.PHONY: install demo test test-fast lint bench clean data

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) --upgrade pip setuptools
	$(PIP) torch==2.13.0
	$(PIP) -e '.[dev,hub,data]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/tritondsl check models/*.tdsl examples/*.tdsl
	mkdir -p build/demo
	$(VENV)/bin/tritondsl compile models/resnet18.tdsl -o build/demo/resnet18.py
	$(VENV)/bin/tritondsl summary models/resnet18.tdsl --batch-size 1
	$(VENV)/bin/tritondsl export models/resnet18.tdsl --format onnx --weights int2 \
	  -o build/demo/resnet18-int2.onnx

test: install data
	$(PY) -m ruff check .
	$(PY) -m pytest

# The inner loop: everything but the tests marked slow (the full suite is `make test`).
test-fast: install
	$(PY) -m ruff check .
	$(PY) -m pytest -q -x -m "not slow"

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: install
	$(PY) benchmarks/bench_frontend.py

# Fashion-MNIST for `tritondsl train --data fashion-mnist`: Debian's dataset-fashion-mnist
# package (IDX files in /usr/share/datasets/fashion-mnist). sudo -n only when not root:
# it fails instead of asking for a password, so this never waits for input.
FASHION_MNIST := /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz
data:
	@if [ -f $(FASHION_MNIST) ]; then echo "Fashion-MNIST: installed"; else \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi; \
	  APT="$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get -y -q"; \
	  $$APT install dataset-fashion-mnist || { $$APT update && $$APT install dataset-fashion-mnist; }; \
	fi

clean:
	rm -rf $(VENV) build *.egg-info
