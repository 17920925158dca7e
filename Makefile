# Set-up and everyday commands. `make run` and `make test` create/update .venv themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# Where the datasets are: $NNSCRATCH_DATA_DIR if set, else ../shared/data when it exists (this
# workspace's offline copy); otherwise nnscratch looks in the user cache and then downloads.
DATA_DIR ?= $(or $(NNSCRATCH_DATA_DIR),$(wildcard ../shared/data))
DATA_ENV := $(if $(DATA_DIR),NNSCRATCH_DATA_DIR=$(abspath $(DATA_DIR)))

.PHONY: .venv run test bench clean

# The venv with torch (CPU build 2.13.0, installed first so that nothing pulls CUDA wheels) and the project.
.venv: $(STAMP)
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[torch]'
	touch $@

$(TEST_STAMP): $(STAMP)
	$(PIP) install -q -e '.[torch,test]'
	touch $@

# Train and compare both engines on MNIST with the seed configuration; writes runs/<timestamp>-compare/.
run: .venv
	$(DATA_ENV) $(VENV)/bin/nnscratch compare $(ARGS)

test: .venv $(TEST_STAMP)
	$(DATA_ENV) $(PY) -m pytest -q $(PYTEST_ARGS)

bench: .venv
	$(PIP) install -q -e '.[torch,bench]'
	$(DATA_ENV) $(VENV)/bin/nnscratch bench $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
