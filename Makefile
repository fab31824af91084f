# Two commands for a newcomer: `make demo` and `make test` (both install what they need first).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint format docs clean

# Reinstall only when pyproject.toml or constraints.txt changed since the last install; the constraints
# file holds the exact versions tested together (pyproject.toml only the ranges).
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/msccl fit --config conf/synthetic.yaml

# Both cores: two pytest workers (pytest-xdist), each with one torch thread (two threads per worker
# would oversubscribe the cores); `pytest tests/test_x.py` alone still runs in one process.
TEST_PARALLEL := -n 2 --dist worksteal
# more pytest arguments, e.g. `make test PYTEST_ARGS="--shuffle 7"` (the order CI printed)
PYTEST_ARGS :=

test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q $(TEST_PARALLEL) $(PYTEST_ARGS)

test-fast: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q $(TEST_PARALLEL) -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check msccl tests benchmarks
	$(BIN)/ruff format --check msccl tests benchmarks

format: $(STAMP)
	$(BIN)/ruff check --fix msccl tests benchmarks
	$(BIN)/ruff format msccl tests benchmarks

# The documentation site (mkdocs.yml) into site/; --strict fails on any warning: a broken link or anchor,
# a page missing from the nav, a docstring that does not match its signature. NO_MKDOCS_2_WARNING
# silences Material's banner about MkDocs 2.0, printed on every build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf runs lightning_logs wandb site .pytest_cache .ruff_cache
