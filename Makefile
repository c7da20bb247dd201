# Two entry points: `make run` and `make test`. Both create/refresh .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The modules setup.py compiles with mypyc: a change to one rebuilds the extensions.
NATIVE := $(shell sed -n 's/^    "\(src\/yibao\/.*\.py\)",$$/\1/p' setup.py)

.PHONY: run test lint typecheck bench catalog clean lock

# The dependencies at exactly the tested versions (requirements.lock), then the package with its
# compiled hot path, built without isolation so that mypyc sees the dependencies' types.
LOCK := requirements.lock
$(STAMP): pyproject.toml setup.py $(LOCK) $(NATIVE)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-build-isolation --no-deps -e .
	touch $(STAMP)

# Refresh the lock deliberately: the newest versions pyproject.toml allows (then run make test).
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml requirements-build.in --extra dev --python-version 3.11 \
		--no-header --annotation-style line --upgrade -o $(LOCK)

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
