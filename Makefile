# Two entry points: `make run` and `make test`. Both create/refresh .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The modules setup.py compiles with mypyc: a change to one rebuilds the extensions.
NATIVE := $(shell sed -n 's/^    "\(src\/yibao\/.*\.py\)",$$/\1/p' setup.py)

.PHONY: run test lint typecheck bench catalog clean

# First the package with its dependencies (pure Python), then the compiled hot path,
# built without isolation so that mypyc sees the dependencies' types.
$(STAMP): pyproject.toml setup.py $(NATIVE)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	YIBAO_PURE=1 $(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-build-isolation --no-deps -e .
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/yibao db upgrade
	$(BIN)/yibao db seed-demo
	$(BIN)/yibao demo
	@echo "== a signed 9001 sign-in against the server below (paste into another shell) =="
	@$(BIN)/yibao demo-curl --host 127.0.0.1 --port 8000
	$(BIN)/yibao serve --host 127.0.0.1 --port 8000

test: $(STAMP)
	$(BIN)/ruff check src tests bench scripts setup.py
	$(BIN)/mypy
	$(BIN)/pytest -n 2

lint: $(STAMP)
	$(BIN)/ruff check src tests bench scripts setup.py

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/engine.py

catalog:
	$(PYTHON) scripts/build_demo_catalog.py

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
	find src -name '*.so' -delete
	rm -f src/yibao/_native_build.json
