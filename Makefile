# Two commands for a newcomer: `make demo` and `make test` (both install what they need first).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint format clean

# Reinstall only when pyproject.toml or constraints.txt changed since the last install; the constraints
# file holds the exact versions tested together (pyproject.toml only the ranges).
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/msccl fit --config conf/synthetic.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check msccl tests benchmarks
	$(BIN)/ruff format --check msccl tests benchmarks

format: $(STAMP)
	$(BIN)/ruff check --fix msccl tests benchmarks
	$(BIN)/ruff format msccl tests benchmarks

clean:
	rm -rf runs lightning_logs wandb .pytest_cache .ruff_cache
