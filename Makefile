# Two commands set everything up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Machines of this workplace keep a CPU torch wheel on disk; elsewhere pip uses PyPI.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels)
PIP := $(PY) -m pip install -q --disable-pip-version-check $(FIND_LINKS) -c constraints.txt

.PHONY: install demo test test-fast test-min test-wheel lint bench clean data

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) --upgrade pip setuptools
	$(PIP) torch==2.13.0
	$(PIP) -e '.[dev,hub,gpu,plots,images]'
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
	$(MAKE) test-min
	$(MAKE) test-wheel

# The layout: build the wheel from a clean copy, install it in a fresh venv (third-party
# packages seen from .venv, nothing downloaded) and use it from the repository root.
test-wheel: install
	$(PY) scripts/check_wheel.py

# The lowest declared versions (constraints-min.txt) of onnx, onnxruntime, safetensors,
# huggingface_hub, httpx2, openvino,
# lark and typer in .venv-min, which sees everything else (torch 2.13.0 included) from
# .venv through a site-dir .pth: a few small wheels, no second torch. Then the tests of
# what those packages serve: ONNX export and checks, Hub folders, releases, the front end,
# the CLI.
MIN_VENV := .venv-min
MIN_PY := $(MIN_VENV)/bin/python
MIN_TESTS := tests/tritondsl/export/test_onnx.py tests/tritondsl/export/test_onnx_verify.py \
  tests/tritondsl/export/test_artifact.py tests/tritondsl/export/test_hub.py \
  tests/tritondsl/export/test_api.py tests/tritondsl/export/test_release.py \
  tests/tritondsl/export/test_github.py tests/tritondsl/cli tests/compiler/test_check.py \
  tests/compiler/test_malformed.py
test-min: install
	test -x $(MIN_PY) || python3 -m venv $(MIN_VENV)
	$(MIN_PY) -c "import site, sys; print(f'import site; site.addsitedir({sys.argv[1]!r})')" \
	  "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
	  > "$$($(MIN_PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/_base_venv.pth"
	$(MIN_PY) -m pip install -q --disable-pip-version-check --no-deps -r constraints-min.txt
	$(MIN_PY) scripts/check_pins.py constraints-min.txt
	$(MIN_PY) -m pytest -q -m "not slow" -p no:cacheprovider $(MIN_TESTS)
	$(MIN_PY) -m pytest -q -p no:cacheprovider tests/tritondsl/export/test_consumers.py -k openvino

# The inner loop: everything but the tests marked slow (the full suite is `make test`).
test-fast: install
	$(PY) -m ruff check .
	$(PY) -m pytest -q -x -m "not slow"

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: install
	$(PY) benchmarks/bench_frontend.py

# The data `make test` and the examples use, from Debian packages: Fashion-MNIST for
# `tritondsl train --data fashion-mnist` (dataset-fashion-mnist, IDX files in
# /usr/share/datasets/fashion-mnist) and the fortunes for `--data text:fortunes` (fortunes,
# text in /usr/share/games/fortunes). sudo -n only when not root: it fails instead of
# asking for a password, so this never waits for input.
FASHION_MNIST := /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz
FORTUNES := /usr/share/games/fortunes/fortunes
data:
	@missing=; \
	  [ -f $(FASHION_MNIST) ] && echo "Fashion-MNIST: installed" || missing="$$missing dataset-fashion-mnist"; \
	  [ -f $(FORTUNES) ] && echo "fortunes: installed" || missing="$$missing fortunes"; \
	  if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi; \
	    APT="$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get -y -q"; \
	    $$APT install $$missing || { $$APT update && $$APT install $$missing; }; \
	  fi

clean:
	rm -rf $(VENV) $(MIN_VENV) build *.egg-info
