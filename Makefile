# arkpose: the two commands are `make ablations` and `make test`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.arkpose-installed
PY := $(VENV)/bin/python
export ARKPOSE_THREADS ?= 2

.PHONY: setup test ablations results lab lint clean-venv

setup: $(STAMP)

# The stamp is rebuilt when the dependency list changes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q numpy cython setuptools wheel
	$(PY) -m pip install -q --no-build-isolation --no-binary xtcocotools -e ".[notebooks,dev,tensorboard]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

ablations: $(STAMP)
	$(VENV)/bin/arkpose ablate --preset laptop $(if $(SEEDS),--seeds $(SEEDS))

# Copy the laptop report's tables and provenance to docs/results/ and quote them in the README.
results: $(STAMP)
	$(PY) -m arkpose.publish reports/table4-laptop

# Jupyter Lab at the repository root (the notebooks find the project from notebooks/ too);
# it prints the URL with its token. LAB_ARGS passes more, e.g. LAB_ARGS="--port 8890 --no-browser".
lab: $(STAMP)
	@echo "Jupyter Lab at $(CURDIR): open the URL printed below (notebooks/ holds the report notebooks)"
	$(VENV)/bin/jupyter lab --notebook-dir="$(CURDIR)" $(LAB_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check arkpose tests

clean-venv:
	rm -rf $(VENV)
