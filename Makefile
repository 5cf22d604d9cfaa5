# Two commands on a fresh machine: `make serve` and `make test`. Each sets up what it needs.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 3000
WEIGHTS ?= real
STAMP := $(VENV)/.installed

# Offline-safe defaults: no telemetry, no hub look-ups at run time (weights come from the store).
export BENTOML_DO_NOT_TRACK := true
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export LITELLM_LOCAL_MODEL_COST_MAP := True
export PYTHONUNBUFFERED := 1

.PHONY: setup models serve test test-fast lint build bench clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt requirements-nodeps.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) is required"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -r requirements-dev.txt
	$(BIN)/python -m pip install --no-deps -r requirements-nodeps.txt
	$(BIN)/python -m pip install --no-deps -e .
	touch $@

models: setup
	HF_HUB_OFFLINE=0 TRANSFORMERS_OFFLINE=0 $(BIN)/python scripts/import_models.py \
		$(if $(filter random-init,$(WEIGHTS)),--random-init,)

serve: models
	$(BIN)/bentoml serve service:FestoraVision --host 0.0.0.0 --port $(PORT)

test: setup
	scripts/install_test_packages.sh
	$(BIN)/python -m pytest

test-fast: setup
	scripts/install_test_packages.sh
	$(BIN)/python -m pytest -m "not slow"

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

build: models
	$(BIN)/bentoml build

bench: setup
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
